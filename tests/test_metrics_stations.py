"""Per-station metrics fed from events: exported at 0 from start-up, moved by the events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitor.events import Source, WeldResult, WeldStart
from monitor.ops.metrics import Metrics
from monitor.ops.status import record_event

SHA = "0" * 64
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
COMMON = {
    "daemon_version": "test",
    "model_sha256": SHA,
    "station": "left",
    "weld_id": "left-1",
    "source": Source(type="device", name="pulse"),
}


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def _result(p: float, label: int) -> WeldResult:
    return WeldResult(
        **COMMON,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=5),
        duration_s=5.0,
        label=label,
        label_name="defect" if label else "good_weld",
        p_defect=p,
        threshold=0.5,
        n_windows=5,
        window_p_max=p,
        degraded=False,
        dropped_frames=0,
        end_reason="gate",
    )


def test_declared_stations_export_zero_for_every_label_channel_and_reason() -> None:
    metrics = Metrics()
    metrics.declare_stations(["left", "right"], ["left", "right"])
    for station in ("left", "right"):
        for label in ("good_weld", "defect"):
            assert _value(metrics, "weldmon_welds_total", station=station, label=label) == 0
        assert _value(metrics, "weldmon_alerts_total", station=station) == 0
        assert _value(metrics, "weldmon_weld_in_progress", station=station) == 0
        assert (
            _value(metrics, "weldmon_welds_degraded_total", station=station, reason="too_short")
            == 0
        )
        assert _value(metrics, "weldmon_weld_last_p_defect", station=station) is None
    assert _value(metrics, "weldmon_audio_dead_microphone", station="right", channel="1") == 0
    assert _value(metrics, "weldmon_audio_device_open") == 0


def test_mix_mode_maps_every_channel_to_the_one_station() -> None:
    metrics = Metrics()
    metrics.declare_stations(["cell1"], ["cell1", "cell1"])
    metrics.dead_microphone("cell1", 1, dead=True)
    assert _value(metrics, "weldmon_audio_dead_microphone", station="cell1", channel="0") == 0
    assert _value(metrics, "weldmon_audio_dead_microphone", station="cell1", channel="1") == 1


def test_a_weld_is_in_progress_from_its_start_to_its_result() -> None:
    metrics = Metrics()
    metrics.declare_stations(["left"], ["left"])
    record_event(metrics, WeldStart(**COMMON, started_at=T0, segmentation="gate", threshold=0.5))
    assert _value(metrics, "weldmon_weld_in_progress", station="left") == 1
    record_event(metrics, _result(0.8, 1))
    assert _value(metrics, "weldmon_weld_in_progress", station="left") == 0
    assert _value(metrics, "weldmon_weld_last_p_defect", station="left") == 0.8
    assert _value(metrics, "weldmon_welds_total", station="left", label="defect") == 1
