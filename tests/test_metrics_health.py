"""Prometheus metrics and /healthz: the pure health rule, and both endpoints over real HTTP."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from monitor.ops.health import (
    HealthServer,
    HealthServerError,
    HealthSettings,
    HealthSnapshot,
    evaluate_health,
)
from monitor.ops.metrics import Metrics

HTTP_TIMEOUT_S = 5.0  # loopback answers in milliseconds
LOOPBACK = "127.0.0.1"
SETTINGS = HealthSettings(host=LOOPBACK, port=0)
HEALTHY = HealthSnapshot(
    model_loaded=True,
    audio_age_s=0.1,
    pending_window_age_s=0.5,
    mqtt_enabled=True,
    mqtt_connected=True,
    outbox_depth=2,
    outbox_oldest_age_s=0.2,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def scrape(base: str) -> dict[str, float]:
    """Every sample on /metrics as {"name{label=value,...}": value}."""
    status, text = get(base + "/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


@pytest.fixture
def serve() -> Iterator[Callable[[Metrics, Callable[[], HealthSnapshot]], str]]:
    """Start a HealthServer on a free loopback port; returns its base URL."""
    servers: list[HealthServer] = []

    def start(metrics: Metrics, snapshot: Callable[[], HealthSnapshot]) -> str:
        server = HealthServer(SETTINGS, metrics.registry, snapshot)
        server.start()
        servers.append(server)
        host, port = server.address
        return f"http://{host}:{port}"

    yield start
    for server in servers:
        server.stop()


# --- the pure health rule ---


def test_health_is_ok_when_model_audio_inference_and_outbox_are_fine() -> None:
    report = evaluate_health(HEALTHY, SETTINGS)
    assert report.ok and report.reasons == ()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"model_loaded": False}, "model not loaded"),
        ({"audio_age_s": None}, "no audio received yet"),
        ({"audio_age_s": 7.5}, "no audio for 7.5 s (limit 5 s)"),
        ({"pending_window_age_s": 45.0}, "inference behind: a window waits 45.0 s (limit 30 s)"),
        (
            {"outbox_depth": 1001, "mqtt_connected": False},
            "outbox holds 1001 events (limit 1000), broker disconnected",
        ),
        (
            {"outbox_oldest_age_s": 200.0},
            "outbox not draining: oldest event waits 200 s (limit 180 s), broker connected",
        ),
    ],
)
def test_health_names_each_failing_check(change: dict[str, object], reason: str) -> None:
    report = evaluate_health(replace(HEALTHY, **change), SETTINGS)  # type: ignore[arg-type]
    assert not report.ok
    assert report.reasons == (reason,)


def test_health_reports_every_failing_check_at_once() -> None:
    snap = replace(HEALTHY, model_loaded=False, audio_age_s=60.0)
    assert len(evaluate_health(snap, SETTINGS).reasons) == 2


def test_health_ignores_the_outbox_when_mqtt_is_disabled() -> None:
    snap = replace(HEALTHY, mqtt_enabled=False, outbox_depth=10**6, outbox_oldest_age_s=1e6)
    assert evaluate_health(snap, SETTINGS).ok


def test_disconnected_broker_with_an_empty_outbox_is_healthy() -> None:
    snap = replace(HEALTHY, mqtt_connected=False, outbox_depth=0, outbox_oldest_age_s=None)
    assert evaluate_health(snap, SETTINGS).ok


def test_health_settings_reject_unknown_keys_by_name() -> None:
    with pytest.raises(ValidationError, match="max_audio_age"):
        HealthSettings.model_validate({"max_audio_age": 3})


def test_health_settings_reject_nan_thresholds() -> None:
    with pytest.raises(ValidationError, match="max_outbox_age_s"):
        HealthSettings.model_validate({"max_outbox_age_s": float("nan")})


def test_health_settings_default_to_loopback_port_9108() -> None:
    settings = HealthSettings()
    assert (settings.enabled, settings.host, settings.port) == (True, LOOPBACK, 9108)


# --- metrics ---


def test_audio_blocks_are_counted_with_their_losses_and_repairs() -> None:
    metrics = Metrics()
    metrics.audio_block(1600, dropped_frames=160, nonfinite_samples=3)
    metrics.audio_block(1600)
    reg = metrics.registry
    assert reg.get_sample_value("weldmon_audio_frames_total") == 3200
    assert reg.get_sample_value("weldmon_audio_dropped_frames_total") == 160
    assert reg.get_sample_value("weldmon_audio_nonfinite_samples_total") == 3


def test_audio_age_counts_seconds_since_the_last_block() -> None:
    clock = FakeClock()
    metrics = Metrics(clock)
    clock.now += 4.0
    assert metrics.registry.get_sample_value("weldmon_audio_last_block_age_seconds") == 4.0
    metrics.audio_block(1600)
    clock.now += 1.5
    assert metrics.registry.get_sample_value("weldmon_audio_last_block_age_seconds") == 1.5


def test_advance_to_adds_only_the_growth_of_a_running_total() -> None:
    metrics = Metrics()
    for total in (2, 2, 5):
        metrics.advance_to(metrics.mqtt_reconnects, total)
    assert metrics.registry.get_sample_value("weldmon_mqtt_reconnects_total") == 5


def test_advance_to_counts_a_restarted_total_as_new() -> None:
    metrics = Metrics()
    metrics.advance_to(metrics.audio_overflows, 7)
    metrics.advance_to(metrics.audio_overflows, 2)  # the capture object was recreated
    assert metrics.registry.get_sample_value("weldmon_audio_overflows_total") == 9


def test_two_metrics_objects_do_not_share_values() -> None:
    first, second = Metrics(), Metrics()
    first.alert("station1")
    assert first.registry.get_sample_value("weldmon_alerts_total", {"station": "station1"}) == 1
    assert second.registry.get_sample_value("weldmon_alerts_total", {"station": "station1"}) is None


def test_inference_latency_lands_in_its_histogram_bucket() -> None:
    metrics = Metrics()
    metrics.window_inferred(0.02)
    metrics.window_inferred(3.0)
    value = metrics.registry.get_sample_value
    assert value("weldmon_windows_inferred_total") == 2
    assert value("weldmon_inference_latency_seconds_bucket", {"le": "0.025"}) == 1
    assert value("weldmon_inference_latency_seconds_bucket", {"le": "5.0"}) == 2


# --- both endpoints over real HTTP ---


def test_metrics_endpoint_serves_every_weldmon_metric(serve) -> None:
    metrics = Metrics()
    metrics.model("ab" * 32)
    metrics.audio_block(16000, dropped_frames=10)
    metrics.window_inferred(0.01)
    metrics.weld_result("station1", "defect", degraded="overflow")
    metrics.weld_result("station2", "good_weld")
    metrics.alert("station1")
    metrics.malformed("trigger")
    metrics.mqtt_connected.set(1)
    metrics.outbox_depth.set(4)
    metrics.inference_queue_depth.set(3)
    metrics.device_losses.inc()
    metrics.watchdog_withheld.inc()
    metrics.advance_to(metrics.audio_overflows, 2)
    metrics.advance_to(metrics.mqtt_reconnects, 1)
    metrics.advance_to(metrics.outbox_dropped, 6)
    samples = scrape(serve(metrics, lambda: HEALTHY))
    expected = {
        "weldmon_audio_frames_total{}": 16000,
        "weldmon_audio_dropped_frames_total{}": 10,
        "weldmon_audio_overflows_total{}": 2,
        "weldmon_audio_nonfinite_samples_total{}": 0,
        "weldmon_audio_device_losses_total{}": 1,
        "weldmon_windows_inferred_total{}": 1,
        "weldmon_inference_latency_seconds_count{}": 1,
        "weldmon_inference_queue_depth{}": 3,
        "weldmon_welds_total{label=defect,station=station1}": 1,
        "weldmon_welds_total{label=good_weld,station=station2}": 1,
        "weldmon_welds_degraded_total{reason=overflow,station=station1}": 1,
        "weldmon_alerts_total{station=station1}": 1,
        "weldmon_mqtt_connected{}": 1,
        "weldmon_mqtt_reconnects_total{}": 1,
        "weldmon_outbox_depth{}": 4,
        "weldmon_outbox_dropped_total{}": 6,
        "weldmon_malformed_messages_total{kind=trigger}": 1,
        "weldmon_malformed_messages_total{kind=command}": 0,
        "weldmon_watchdog_pings_withheld_total{}": 1,
        "weldmon_model_loaded{}": 1,
    }
    assert {k: samples.get(k) for k in expected} == expected
    assert "weldmon_audio_last_block_age_seconds{}" in samples
    info = [k for k in samples if k.startswith("weldmon_build_info")]
    assert len(info) == 1 and f"model_sha256={'ab' * 32}" in info[0]


def test_healthz_answers_200_with_the_checks_when_healthy(serve) -> None:
    status, body = get(serve(Metrics(), lambda: HEALTHY) + "/healthz")
    assert status == 200
    doc = json.loads(body)
    assert doc["status"] == "ok"
    assert doc["checks"]["outbox_depth"] == 2
    assert "reasons" not in doc


def test_healthz_answers_503_with_the_reasons_when_unhealthy(serve) -> None:
    stale = replace(HEALTHY, audio_age_s=12.0)
    status, body = get(serve(Metrics(), lambda: stale) + "/healthz")
    assert status == 503
    assert json.loads(body) == {
        "status": "unhealthy",
        "reasons": ["no audio for 12.0 s (limit 5 s)"],
        "checks": {**HEALTHY.__dict__, "audio_age_s": 12.0},
    }


def test_healthz_follows_the_daemon_state_between_requests(serve) -> None:
    state = {"snap": HEALTHY}
    base = serve(Metrics(), lambda: state["snap"])
    assert get(base + "/healthz")[0] == 200
    state["snap"] = replace(HEALTHY, model_loaded=False)
    assert get(base + "/healthz")[0] == 503
    state["snap"] = HEALTHY
    assert get(base + "/healthz")[0] == 200


def test_healthz_answers_503_when_the_probe_itself_fails(serve) -> None:
    def broken() -> HealthSnapshot:
        raise RuntimeError("pipeline not built")

    status, body = get(serve(Metrics(), broken) + "/healthz")
    assert status == 503
    assert "pipeline not built" in json.loads(body)["reasons"][0]


def test_unknown_path_answers_404(serve) -> None:
    assert get(serve(Metrics(), lambda: HEALTHY) + "/nope")[0] == 404


def test_a_port_in_use_is_refused_naming_the_http_section() -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HealthServer(
            HealthSettings(host=LOOPBACK, port=port), Metrics().registry, lambda: HEALTHY
        )
        with pytest.raises(HealthServerError, match=rf"http: cannot listen on .*:{port}"):
            server.start()


def test_stop_closes_the_listening_socket() -> None:
    server = HealthServer(SETTINGS, Metrics().registry, lambda: HEALTHY)
    with server:
        host, port = server.address
        assert get(f"http://{host}:{port}/healthz")[0] == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=HTTP_TIMEOUT_S)
