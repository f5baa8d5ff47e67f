"""Teach-in (issue 19): the threshold rule, the per-station state machine behind
``{prefix}/cmd/teach``, its calibration file in state_dir, and how a taught threshold judges
a station's welds. The daemon over a real broker and PulseAudio: tests/test_teach_live.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from deploy.pooling import topk_pool_np
from deploy.teach_rule import ROUGH_BELOW_WELDS, TeachRuleError, taught_threshold
from monitor.events import Source, ThresholdSource
from monitor.events.teach import TeachCommand
from monitor.ops.teach_metrics import register_teach_metrics
from monitor.pipeline.tracker import ModelInfo, StationThresholds, TrackerOptions, WeldTracker
from monitor.teach import store
from monitor.teach.config import TeachInConfig
from monitor.teach.station import TeachIn

REPO = Path(__file__).resolve().parents[1]
MODEL = ModelInfo("ab" * 32, 16_000, 16_000, 0.05, 0.35)
OTHER_MODEL = ModelInfo("cd" * 32, 16_000, 16_000, 0.05, 0.35)
RATIO = MODEL.eval_pool_ratio


def _good_welds(n: int, windows: int = 20, seed: int = 0) -> list[list[float]]:
    """Good welds whose windows mostly sit near 0.3 with a few up to ~0.5 (the field
    report's cell: its good welds score above the artifact's 0.35)."""
    rng = np.random.default_rng(seed)
    return [list(np.clip(rng.beta(6, 12, windows), 0, 1).astype(float)) for _ in range(n)]


# ---- the rule ---------------------------------------------------------------------------------


def test_one_taught_weld_is_enough_and_stays_good_under_its_threshold() -> None:
    welds = _good_welds(1)
    rule = taught_threshold(welds, RATIO, 0.01, 0.0, 0.95)
    assert rule.welds == 1 and rule.windows == 20 and rule.rough
    assert rule.threshold > topk_pool_np(np.asarray(welds[0]), RATIO)
    assert "rough" in (rule.warning or "")
    assert taught_threshold(welds, RATIO, 0.01, 0.0, 0.95) == rule  # deterministic


def test_the_threshold_flags_about_the_target_share_of_new_good_welds() -> None:
    taught = _good_welds(ROUGH_BELOW_WELDS, seed=1)
    rule = taught_threshold(taught, RATIO, 0.01, 0.0, 0.95)
    assert not rule.rough and rule.warning is None
    fresh = _good_welds(2000, seed=2)  # welds of the same cell it never saw
    flagged = np.mean([topk_pool_np(np.asarray(w), RATIO) >= rule.threshold for w in fresh])
    assert flagged < 0.03
    looser = taught_threshold(taught, RATIO, 0.10, 0.0, 0.95)
    assert looser.threshold < rule.threshold  # a higher false-alarm target, a lower threshold


def test_the_guards_hold_the_threshold_and_say_so() -> None:
    quiet = [[0.01] * 10]
    low = taught_threshold(quiet, RATIO, 0.01, 0.25, 0.95)
    assert (low.threshold, low.bounded) == (0.25, "lower") and "lower guard" in low.warning
    loud = [[0.99] * 10]
    high = taught_threshold(loud, RATIO, 0.01, 0.25, 0.95)
    assert (high.threshold, high.bounded) == (0.95, "upper")


@pytest.mark.parametrize("welds", [[], [[]], [[0.2, float("nan")]]])
def test_no_usable_window_gives_no_threshold(welds: list) -> None:
    with pytest.raises(TeachRuleError):
        taught_threshold(welds, RATIO, 0.01, 0.0, 0.95)


def test_the_default_lower_guard_follows_the_artifact() -> None:
    assert TeachInConfig().guards(0.35) == pytest.approx((0.25, 0.95))
    assert TeachInConfig(min_threshold=0.3).guards(0.35) == (0.3, 0.95)
    with pytest.raises(ValueError):
        TeachInConfig(min_threshold=0.99, max_threshold=0.9)


# ---- the state machine ------------------------------------------------------------------------


class Station:
    """A TeachIn over a real state_dir, with the weld trackers the daemon would run."""

    def __init__(
        self,
        state_dir: Path,
        model: ModelInfo = MODEL,
        stations: tuple = ("cell1", "cell2"),
        cfg: TeachInConfig = TeachInConfig(),  # noqa: B008 (frozen)
    ) -> None:
        self.voids: list[tuple[str, str | None]] = []
        self.recalibrations: list[tuple[str, str]] = []  # the daemon's `recalibrate` errors
        self.teach = TeachIn(
            list(stations),
            cfg,
            state_dir,
            lambda m, s: self.voids.append((m, s)),
            lambda m, s: self.recalibrations.append((m, s)),
        )
        self.teach.bind(model)
        self.options = TrackerOptions(model, "test", "gate", teach=self.teach)
        self.n = 0

    def ask(self, action: str, station: str = "cell1", **fields: str):
        return self.teach.handle(TeachCommand(action=action, station=station, by="t", **fields))

    def weld(self, probs: list[float], station: str = "cell1", degraded: bool = False):
        """One weld from start to result, its result fed back as the daemon's listener."""
        self.n += 1
        source = Source(type="device", name="t")
        weld = WeldTracker(self.options, station, source, self.n * 10**7, 1_700_000_000.0)
        for i, p in enumerate(probs):
            weld.add_window(i, p, weld.start_index + (i + 1) * 16_000, progress=False)
        if degraded:
            weld.degrade("dropped_audio", 10)
        result = weld.result(weld.start_index + len(probs) * 16_000, "gate")
        self.teach.observe(result)
        return weld.start_event(), result


def test_a_teach_in_collects_welds_and_accept_sets_the_stations_threshold(tmp_path: Path) -> None:
    s = Station(tmp_path)
    started = s.ask("start")
    assert started.outcome == "applied" and started.state == "collecting" and started.run_id
    welds = _good_welds(3, seed=3)
    results = [s.weld(w)[1] for w in welds]
    assert all(r.teach_in and r.teach_in_run == started.run_id for r in results)
    assert all(r.window_probs is not None for r in results)  # the sample rides in the result
    assert all(r.threshold_source == ThresholdSource.ARTIFACT for r in results)  # judged as usual
    _, other = s.weld(welds[0], station="cell2")
    assert not other.teach_in and other.window_probs is None
    status = s.ask("status")
    assert (status.welds, status.windows, status.weld_ids) == (3, 60, [r.weld_id for r in results])
    accepted = s.ask("accept")
    assert accepted.outcome == "applied" and accepted.state == "taught"
    assert "rough" in accepted.warning  # 3 welds < 5
    expected = taught_threshold(welds, RATIO, 0.01, 0.25, 0.95).threshold
    assert accepted.threshold == pytest.approx(expected) and accepted.threshold != 0.35
    assert accepted.threshold_source == ThresholdSource.TEACH_IN
    start, result = s.weld(welds[1])
    for event in (start, result):
        assert event.threshold == pytest.approx(expected)
        assert event.threshold_source == ThresholdSource.TEACH_IN
        assert (event.teach_in_id, event.teach_in_welds) == (started.run_id, 3)
        assert not event.teach_in
    assert start.alert_threshold == start.threshold  # the alert follows the taught threshold
    assert result.label == 0  # a taught good weld is good under its own threshold
    _, other = s.weld(welds[0], station="cell2")
    assert other.threshold == 0.35 and other.threshold_source == ThresholdSource.ARTIFACT
    assert s.teach.snapshot()["cell1"][:2] == (2, pytest.approx(expected))


def test_a_configured_alert_threshold_stays_under_a_taught_decision_threshold() -> None:
    base = StationThresholds.resolve(0.35, None, 0.3)
    taught = store.Calibration(
        teach_in_id="x", threshold=0.5, raw_threshold=0.5, target_false_alarm=0.01, welds=1,
        windows=3, accepted_at="2026-01-01T00:00:00Z", by="t",
    )  # fmt: skip
    limits = base.taught(taught)
    assert (limits.decision, limits.decision_source) == (0.5, ThresholdSource.TEACH_IN)
    assert (limits.alert, limits.alert_source) == (0.3, ThresholdSource.CONFIG)


def test_a_dropped_weld_and_a_degraded_weld_are_left_out(tmp_path: Path) -> None:
    s = Station(tmp_path)
    s.ask("start")
    kept, bad = _good_welds(2, seed=4)
    s.weld(kept)
    _, known_bad = s.weld([0.9] * 20)  # the operator knows this part was bad
    s.weld(bad, degraded=True)
    dropped = s.ask("drop", weld_id=known_bad.weld_id)
    assert dropped.outcome == "applied" and dropped.dropped == [known_bad.weld_id]
    assert (dropped.welds, dropped.skipped) == (1, 1)
    accepted = s.ask("accept")
    assert accepted.calibration["welds"] == 1
    expected = taught_threshold([kept], RATIO, 0.01, 0.25, 0.95).threshold
    assert accepted.threshold == pytest.approx(expected)


@pytest.mark.parametrize(
    ("steps", "action", "fields", "reason"),
    [
        ([], "start", {"station": "cell9"}, "unknown station 'cell9'"),
        ([], "accept", {}, "no teach-in runs at cell1"),
        (["start"], "accept", {}, "holds no weld yet"),
        (["start"], "start", {}, "already runs at cell1"),
        (["start"], "drop", {"weld_id": "nope"}, "not a weld of teach-in"),
        (["start"], "drop", {}, "drop needs the weld_id"),
        ([], "reset", {}, "no teach-in to reset"),
    ],
)
def test_bad_commands_are_refused_and_change_nothing(
    tmp_path: Path, steps: list[str], action: str, fields: dict, reason: str
) -> None:
    s = Station(tmp_path)
    for step in steps:
        s.ask(step)
    before = s.teach.snapshot(), dict(s.teach.runs)
    station = fields.pop("station", "cell1")
    reply = s.ask(action, station=station, **fields)
    assert reply.outcome == "refused" and reason in reply.reason
    assert (s.teach.snapshot(), dict(s.teach.runs)) == before
    assert not (tmp_path / store.TEACH_FILE).exists()


def test_reset_ends_a_run_then_the_calibration(tmp_path: Path) -> None:
    s = Station(tmp_path)
    s.ask("start")
    s.weld(_good_welds(1)[0])
    s.ask("accept")
    s.ask("start")
    assert s.ask("reset").state == "taught"  # the run ends, the calibration stays
    assert s.ask("reset").state == "idle"
    _, result = s.weld(_good_welds(1)[0])
    assert result.threshold_source == ThresholdSource.ARTIFACT
    assert json.loads((tmp_path / store.TEACH_FILE).read_text())["stations"] == {}


# ---- drift --------------------------------------------------------------------------------

DRIFT = TeachInConfig(drift_welds=6, drift_min_welds=3, drift_share=0.5)


def _drift_taught(tmp_path: Path) -> tuple[Station, float, float]:
    """cell1 taught from 5 good welds under DRIFT; (station, reference, threshold)."""
    s = Station(tmp_path, cfg=DRIFT)
    s.ask("start")
    welds = _good_welds(ROUGH_BELOW_WELDS, seed=1)
    for w in welds:
        s.weld(w)
    calibration = s.ask("accept").calibration
    reference = float(np.median([topk_pool_np(np.asarray(w), RATIO) for w in welds]))
    assert calibration["reference"] == pytest.approx(reference)  # stored with the calibration
    return s, reference, calibration["threshold"]


def _at(reference: float, threshold: float, share: float) -> list[float]:
    """A weld whose pooled score sits `share` of the way from reference to threshold."""
    return [reference + share * (threshold - reference)] * 20


def test_drifting_good_welds_raise_one_recalibrate_per_episode_and_re_arm(tmp_path: Path) -> None:
    s, reference, threshold = _drift_taught(tmp_path)
    assert s.teach.drift_snapshot()["cell1"][1] == 0
    for _ in range(3):
        _, result = s.weld(_at(reference, threshold, 0.1))
        assert result.label == 0 and result.threshold_source == ThresholdSource.TEACH_IN
    share, alarmed = s.teach.drift_snapshot()["cell1"]
    assert share == pytest.approx(0.1) and alarmed == 0 and s.recalibrations == []
    for _ in range(6):  # still judged good, but most of the way to the threshold
        _, result = s.weld(_at(reference, threshold, 0.8))
        assert result.label == 0
    assert len(s.recalibrations) == 1  # one warning, not one per weld
    message, station = s.recalibrations[0]
    assert station == "cell1" and "teach it again" in message
    share, alarmed = s.teach.drift_snapshot()["cell1"]
    assert share == pytest.approx(0.8) and alarmed == 1
    for _ in range(6):  # the cell is fixed: back where it was taught
        s.weld(_at(reference, threshold, 0.0))
    assert s.teach.drift_snapshot()["cell1"] == (pytest.approx(0.0), 0)
    for _ in range(6):  # and downwards: a microphone knocked off the seam hears less
        s.weld([max(0.0, reference - 0.8 * (threshold - reference))] * 20)
    assert len(s.recalibrations) == 2  # re-armed, a second episode


def test_defects_and_degraded_welds_do_not_count_towards_drift(tmp_path: Path) -> None:
    s, reference, threshold = _drift_taught(tmp_path)
    for _ in range(6):
        _, result = s.weld([min(1.0, threshold + 0.01)] * 20)
        assert result.label == 1
        s.weld(_at(reference, threshold, 0.9), degraded=True)
    assert s.teach.drift_snapshot()["cell1"] == (pytest.approx(float("nan"), nan_ok=True), 0)
    assert s.recalibrations == []


def test_drift_is_never_watched_on_an_untaught_station_nor_while_a_teach_in_collects(
    tmp_path: Path,
) -> None:
    s, reference, threshold = _drift_taught(tmp_path)
    for _ in range(6):
        s.weld([0.3] * 20, station="cell2")  # untaught: judged good by the artifact's 0.35
    s.ask("start")  # a new teach-in: the welds are its sample, not drift
    for _ in range(6):
        _, result = s.weld(_at(reference, threshold, 0.9))
        assert result.teach_in
    assert s.recalibrations == []
    snapshot = s.teach.drift_snapshot()
    assert snapshot["cell2"][1] == 0 and snapshot["cell2"][0] != snapshot["cell2"][0]  # NaN


def test_a_new_teach_in_starts_a_new_watch(tmp_path: Path) -> None:
    s, reference, threshold = _drift_taught(tmp_path)
    for _ in range(3):
        s.weld(_at(reference, threshold, 0.9))
    assert len(s.recalibrations) == 1 and s.teach.drift_snapshot()["cell1"][1] == 1
    s.ask("start")
    for w in _good_welds(ROUGH_BELOW_WELDS, seed=7):
        s.weld(w)
    new = s.ask("accept").calibration
    assert s.teach.drift_snapshot()["cell1"][1] == 0  # re-armed by the new calibration
    for _ in range(3):
        s.weld(_at(new["reference"], new["threshold"], 0.9))
    assert s.teach.drift_snapshot()["cell1"][1] == 1 and len(s.recalibrations) == 2


def test_a_calibration_without_a_reference_is_not_watched(tmp_path: Path) -> None:
    _drift_taught(tmp_path)
    path = tmp_path / store.TEACH_FILE
    data = json.loads(path.read_text())
    del data["stations"]["cell1"]["reference"]  # a file written before drift was watched
    path.write_text(json.dumps(data))
    s = Station(tmp_path, cfg=DRIFT)
    for _ in range(6):
        _, result = s.weld([0.01] * 20)
        assert result.threshold_source == ThresholdSource.TEACH_IN
    assert s.recalibrations == [] and s.voids == []


def test_drift_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="drift_min_welds"):
        TeachInConfig(drift_welds=3, drift_min_welds=5)
    with pytest.raises(ValueError):
        TeachInConfig(drift_share=0)


def test_drift_gauges_are_exported_per_station(tmp_path: Path) -> None:
    s, reference, threshold = _drift_taught(tmp_path)
    for _ in range(3):
        s.weld(_at(reference, threshold, 0.9))
    registry = CollectorRegistry()
    register_teach_metrics(registry, s.teach.snapshot, lambda: {}, s.teach.drift_snapshot)
    assert registry.get_sample_value(
        "weldmon_teach_in_drift", {"station": "cell1"}
    ) == pytest.approx(0.9)
    assert registry.get_sample_value("weldmon_teach_in_recalibrate", {"station": "cell1"}) == 1
    assert registry.get_sample_value("weldmon_teach_in_recalibrate", {"station": "cell2"}) == 0
    assert registry.get_sample_value("weldmon_teach_in_drift", {"station": "cell2"}) is None


# ---- the calibration file ---------------------------------------------------------------------


def _taught(tmp_path: Path) -> float:
    s = Station(tmp_path)
    s.ask("start")
    s.weld(_good_welds(1)[0])
    return s.ask("accept").threshold


def test_a_calibration_survives_a_restart(tmp_path: Path) -> None:
    threshold = _taught(tmp_path)
    data = json.loads((tmp_path / store.TEACH_FILE).read_text())
    assert (data["format"], data["version"], data["model_sha256"]) == (
        "weldmon-teach-in",
        1,
        MODEL.sha256,
    )
    again = Station(tmp_path)
    assert again.voids == []
    _, result = again.weld(_good_welds(1, seed=5)[0])
    assert result.threshold == threshold and result.threshold_source == ThresholdSource.TEACH_IN


def test_another_model_voids_the_calibration_with_a_report(tmp_path: Path) -> None:
    _taught(tmp_path)
    other = Station(tmp_path, OTHER_MODEL)
    assert len(other.voids) == 1 and "teach-in is void" in other.voids[0][0]
    _, result = other.weld(_good_welds(1)[0])
    assert result.threshold == 0.35 and result.threshold_source == ThresholdSource.ARTIFACT
    assert not (tmp_path / store.TEACH_FILE).exists()
    assert (tmp_path / f"{store.TEACH_FILE}.void").exists()  # kept for a person, never read


def test_a_reload_to_another_model_voids_it_and_ends_a_running_teach_in(tmp_path: Path) -> None:
    s = Station(tmp_path)
    s.ask("start")
    s.weld(_good_welds(1)[0])
    s.ask("accept")
    s.ask("start", station="cell2")
    s.teach.bind(MODEL)  # a reload of the same model keeps everything
    assert s.voids == [] and s.teach.state("cell1") == "taught"
    s.teach.bind(OTHER_MODEL)
    assert [station for _, station in s.voids] == ["cell2", None]
    assert s.teach.state("cell1") == s.teach.state("cell2") == "idle"


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps({"format": "something-else", "version": 1}),
        json.dumps({"format": "weldmon-teach-in", "version": 99, "model_sha256": "ab" * 32}),
        json.dumps(
            {
                "format": "weldmon-teach-in",
                "version": 1,
                "model_sha256": "ab" * 32,
                "stations": {"cell1": {"threshold": 7}},
            }
        ),
    ],
)
def test_a_corrupt_or_foreign_file_is_ignored_with_a_report(tmp_path: Path, text: str) -> None:
    (tmp_path / store.TEACH_FILE).write_text(text)
    s = Station(tmp_path)
    assert len(s.voids) == 1 and s.voids[0][1] is None
    _, result = s.weld(_good_welds(1)[0])
    assert result.threshold_source == ThresholdSource.ARTIFACT
    assert (tmp_path / f"{store.TEACH_FILE}.bad").read_text() == text
    assert s.ask("start").outcome == "applied"  # the station can be taught again


def test_an_unwritable_state_dir_refuses_the_accept_and_the_run_goes_on(tmp_path: Path) -> None:
    s = Station(tmp_path)
    s.ask("start")
    s.weld(_good_welds(1)[0])
    # a directory where the file goes: the atomic rename fails, as on a full or read-only
    # disk (chmod would not stop root, who runs these tests in the container)
    (tmp_path / store.TEACH_FILE).mkdir()
    (tmp_path / store.TEACH_FILE / "x").touch()
    reply = s.ask("accept")
    assert reply.outcome == "refused" and "cannot be stored" in reply.reason
    assert s.teach.state("cell1") == "collecting" and reply.welds == 1


# ---- the command line, before any daemon is asked ---------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", "teach", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def _config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "monitor.yaml"
    data = {
        "model": {"path": str(tmp_path / "model.pt")},
        "audio": {"stations": ["cell1"]},
        "mqtt": {"host": "127.0.0.1", "port": port, "connect_timeout_s": 2},
        "state_dir": str(tmp_path / "state"),
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_cli_refuses_a_bad_config_or_station_with_exit_2_and_sends_nothing(
    tmp_path: Path,
) -> None:
    missing = _cli("start", "--daemon", str(tmp_path / "none.yaml"), "--station", "cell1")
    assert missing.returncode == 2 and "none.yaml" in missing.stderr
    unknown = _cli("start", "--daemon", str(_config(tmp_path, 1)), "--station", "cell9")
    assert unknown.returncode == 2 and "has the stations ['cell1']" in unknown.stderr
    no_weld = _cli("drop", "--daemon", str(_config(tmp_path, 1)), "--station", "cell1")
    assert no_weld.returncode == 2 and "--weld" in no_weld.stderr


def test_the_cli_says_when_the_broker_cannot_be_reached_with_exit_1(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = _cli("status", "--daemon", str(_config(tmp_path, port)), "--station", "cell1")
    assert down.returncode == 1 and f"broker 127.0.0.1:{port}" in down.stderr


def test_a_station_the_config_no_longer_has_keeps_its_calibration_in_the_file(
    tmp_path: Path,
) -> None:
    s = Station(tmp_path)
    s.ask("start", station="cell2")
    s.weld(_good_welds(1)[0], station="cell2")
    cell2 = s.ask("accept", station="cell2").calibration
    fewer = Station(tmp_path, stations=("cell1",))  # cell2 left the config
    assert fewer.voids == [] and "cell2" not in fewer.teach.snapshot()
    assert fewer.ask("status", station="cell2").outcome == "refused"
    fewer.ask("start")
    fewer.weld(_good_welds(1)[0])
    assert fewer.ask("accept").outcome == "applied"
    stored = json.loads((tmp_path / store.TEACH_FILE).read_text())["stations"]
    assert set(stored) == {"cell1", "cell2"} and stored["cell2"] == cell2
