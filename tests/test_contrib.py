"""contrib/: the Grafana dashboard and the Prometheus alert rules ship in a shape their tools
accept, and every metric they query is exported by a running `weldmon run`.

The expressions are parsed with `promql_parser` (Python bindings of the Rust promql-parser
crate that GreptimeDB uses), not a regex, so a selector hidden in a function call, a binary
operation or a subquery is found, and a syntax error fails the test. Grafana's own variables
(``$__rate_interval``, ``$instance``, ...) are not PromQL; they are replaced by values of the
right kind before parsing, and any other ``$`` fails the test.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "contrib" / "prometheus" / "weldmon-alerts.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "weldmon-dashboard.json"
RATE = 16_000
STARTUP_TIMEOUT_S = 90.0  # torch import and model load on a loaded 2-core box
SILENCE_ALARM_S = 1.0  # the null sink delivers exact zeros until something plays
# Series Prometheus makes itself for every scrape target; no exporter exports them.
PROMETHEUS_OWN_SERIES = {"up"}
# Declared (HELP/TYPE) from start-up but without a sample until the first weld result: a
# "latest p_defect" of 0 before any weld would be a made-up verdict.
AFTER_FIRST_RESULT = {"weldmon_weld_last_p_defect"}
# Prometheus' duration syntax (https://prometheus.io/docs/prometheus/latest/querying/basics/).
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
SEVERITIES = {"critical", "warning", "info"}
# Stand-ins for Grafana's variables, of the kind PromQL expects where they appear.
GRAFANA_BUILTINS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
GRAFANA_PANEL_TYPES = {"row", "stat", "timeseries", "state-timeline", "table", "gauge"}
GRID_COLUMNS = 24
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_]\w*)\)$")

# ---- the files --------------------------------------------------------------------------


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _variables(dashboard: dict) -> set[str]:
    return {v["name"] for v in dashboard["templating"]["list"]}


def _dashboard_queries(dashboard: dict) -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and the variables' queries."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = LABEL_VALUES.match(var["definition"])
        assert match, f"variable {var['name']}: expected label_values(selector, label)"
        exprs.append(match["selector"])
    return exprs


def _promql(expr: str, variables: set[str]) -> str:
    """`expr` with Grafana's variables replaced; fails on a variable nobody defines."""
    for name, value in GRAFANA_BUILTINS.items():
        expr = expr.replace(name, value)
    for name in variables:
        expr = expr.replace(f"${name}", ".*")  # only used inside =~ matchers
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


@dataclass(frozen=True)
class Selector:
    """One vector selector of a parsed expression: the metric and its equality matchers."""

    metric: str
    equals: tuple[tuple[str, str], ...]


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of a PromQL expression (SyntaxError-like ValueError if invalid)."""
    found: list[Selector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers.matchers
            name = node.name or next(m.value for m in matchers if m.name == "__name__")
            equals = tuple(
                (m.name, m.value)
                for m in matchers
                if m.op == promql_parser.MatchOp.Equal and m.name != "__name__"
            )
            found.append(Selector(name, equals))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def all_selectors() -> dict[str, list[Selector]]:
    """expression -> its selectors, for every rule and dashboard query."""
    dashboard = _dashboard()
    variables = _variables(dashboard)
    exprs = [r["expr"] for r in _rules()] + [
        _promql(e, variables) for e in _dashboard_queries(dashboard)
    ]
    return {e: selectors(e) for e in exprs}


# ---- structure (no daemon) ----------------------------------------------------------------


def test_selectors_are_found_inside_functions_operators_and_subqueries() -> None:
    expr = (
        'sum by (s) (rate(a_total{label="defect", s=~".*"}[5m])) / on (s) '
        "max_over_time(b[10m:1m]) > bool -c"
    )
    assert selectors(expr) == [
        Selector("a_total", (("label", "defect"),)),
        Selector("b", ()),
        Selector("c", ()),
    ]
    with pytest.raises(ValueError):
        selectors("sum(rate(a[5m])")  # unbalanced: not PromQL


def test_alert_rules_have_the_structure_prometheus_loads() -> None:
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"}
    names = [g["name"] for g in doc["groups"]]
    assert len(names) == len(set(names)), "group names must be unique"
    alerts = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "rules", "interval"} and group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]), rule["alert"]
            assert isinstance(rule["expr"], str) and selectors(rule["expr"])
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule
            assert rule["labels"]["severity"] in SEVERITIES, rule
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts)), "alert names must be unique"


def test_alert_rules_cover_what_an_operator_is_paged_for() -> None:
    by_metric: dict[str, set[str]] = {}
    for rule in _rules():
        for sel in selectors(rule["expr"]):
            by_metric.setdefault(sel.metric, set()).add(rule["alert"])
    assert "weldmon_audio_device_open" in by_metric  # device lost
    assert "weldmon_audio_last_block_age_seconds" in by_metric  # no audio
    assert "weldmon_audio_dead_microphone" in by_metric  # dead microphone
    assert {"weldmon_outbox_depth", "weldmon_outbox_oldest_age_seconds"} <= set(by_metric)
    assert "weldmon_teach_in_recalibrate" in by_metric  # a taught station drifted
    defect_rate = [r for r in _rules() if r["alert"] == "WeldmonDefectRateHigh"]
    assert defect_rate and "by (instance, station)" in defect_rate[0]["expr"]
    assert Selector("weldmon_welds_total", (("label", "defect"),)) in selectors(
        defect_rate[0]["expr"]
    )


def test_dashboard_panels_are_laid_out_on_grafanas_grid_and_query_prometheus() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = _variables(dashboard)
    assert {"datasource", "instance", "station"} <= variables
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["type"] in GRAFANA_PANEL_TYPES, panel["type"]
        assert panel["title"], panel["id"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in ("x", "y", "w", "h"))
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] + grid["w"] <= GRID_COLUMNS
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert selectors(_promql(target["expr"], variables)), target


# ---- against a running daemon ---------------------------------------------------------------


def _scrape(port: int) -> dict[str, list[dict[str, str]]]:
    """metric sample name -> the label sets it is exported with (plus ``_value``); a family
    declared without samples maps its name to []."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, [])
        for sample in family.samples:
            out.setdefault(sample.name, []).append({**sample.labels, "_value": sample.value})
    return out


@dataclass
class Scrapes:
    silent: dict[str, list[dict]]  # both channels silent past the alarm
    left_sounding: dict[str, list[dict]]  # noise played into the left channel only
    opcua_unavailable: list[dict]  # log records: the OPC UA port was taken


@pytest.fixture(scope="module")
def daemon_scrapes(
    pulse_server: PulseAudio, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scrapes]:
    folder = tmp_path_factory.mktemp("contrib")
    broker = MosquittoBroker(folder / "mosquitto")
    broker.start()
    artifact = export_untrained(folder / "artifact").path
    audio = {
        "channels": 2,
        "channel_mode": "per_channel",
        "stations": ["left", "right"],
        "silence_alarm_s": SILENCE_ALARM_S,
    }
    pulse_server.create_sink("contrib", RATE, 2)
    # The daemon also gets an OPC UA port someone else holds: a side path that cannot start
    # must not stop the rest (metrics, alarms) from working.
    taken = socket.create_server(("127.0.0.1", 0))
    opcua = {"enabled": True, "port": taken.getsockname()[1]}
    config = write_monitor_config(folder, artifact, broker, audio=audio, opcua=opcua)
    daemon = WeldmonRun(config, pulse_server.subprocess_env(), folder / "daemon.stderr")
    try:
        port = daemon.wait_for_log("http_listening", STARTUP_TIMEOUT_S)[0]["port"]
        unavailable = daemon.wait_for_log("opcua_unavailable", STARTUP_TIMEOUT_S)
        daemon.wait_for_log("dead_microphone", STARTUP_TIMEOUT_S, count=2)
        silent = _scrape(port)
        noise = np.zeros((3 * RATE, 2), np.float32)
        noise[:, 0] = np.random.default_rng(5).standard_normal(3 * RATE) * 0.05
        player = pulse_server.play_array(noise, RATE, "contrib")
        daemon.wait_for_log("microphone_sound_returned", 30.0)
        left_sounding = _scrape(port)
        player.wait(30)
        yield Scrapes(silent, left_sounding, unavailable)
    finally:
        daemon.stop()
        taken.close()
        broker.stop()
        pulse_server.remove_sink("contrib")


def _value(scrape: dict[str, list[dict]], name: str, **labels: str) -> float:
    rows = [r for r in scrape[name] if all(r.get(k) == v for k, v in labels.items())]
    assert len(rows) == 1, (name, labels, scrape.get(name))
    return float(rows[0]["_value"])


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.slow
def test_every_metric_the_rules_and_dashboard_query_is_exported_by_a_running_daemon(
    daemon_scrapes: Scrapes,
) -> None:
    exported = daemon_scrapes.silent
    missing = []
    for expr, found in all_selectors().items():
        for sel in found:
            if sel.metric in PROMETHEUS_OWN_SERIES:
                continue
            if sel.metric in AFTER_FIRST_RESULT and sel.metric in exported:
                continue
            rows = exported.get(sel.metric, [])
            if not any(all(r.get(k) == v for k, v in sel.equals) for r in rows):
                missing.append(f"{sel.metric}{dict(sel.equals) or ''} in {expr!r}")
    assert not missing, "\n".join(missing)


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.slow
def test_per_station_series_exist_before_the_first_weld(daemon_scrapes: Scrapes) -> None:
    s = daemon_scrapes.silent
    for station in ("left", "right"):
        for label in ("good_weld", "defect"):
            assert _value(s, "weldmon_welds_total", station=station, label=label) == 0
        assert _value(s, "weldmon_alerts_total", station=station) == 0
        assert _value(s, "weldmon_weld_in_progress", station=station) == 0
        assert _value(s, "weldmon_teach_in_recalibrate", station=station) == 0
    assert _value(s, "weldmon_audio_device_open") == 1
    assert _value(s, "weldmon_outbox_oldest_age_seconds") >= 0


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.slow
def test_dead_microphone_metric_follows_each_channel(daemon_scrapes: Scrapes) -> None:
    silent, sounding = daemon_scrapes.silent, daemon_scrapes.left_sounding
    name = "weldmon_audio_dead_microphone"
    assert _value(silent, name, station="left", channel="0") == 1
    assert _value(silent, name, station="right", channel="1") == 1
    assert _value(sounding, name, station="left", channel="0") == 0
    assert _value(sounding, name, station="right", channel="1") == 1


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.slow
def test_an_opcua_port_in_use_is_reported_and_the_daemon_goes_on(daemon_scrapes: Scrapes) -> None:
    assert "cannot listen on 127.0.0.1" in daemon_scrapes.opcua_unavailable[0]["error"]
    # Scraped after the failure: the dead-microphone alarms still came and cleared.
    assert _value(daemon_scrapes.left_sounding, "weldmon_audio_device_open") == 1


def test_contrib_readme_names_both_files() -> None:
    readme = (REPO / "contrib" / "README.md").read_text()
    for path in (RULES, DASHBOARD):
        assert str(path.relative_to(REPO / "contrib")) in readme
