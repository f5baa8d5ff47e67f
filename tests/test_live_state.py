"""The live-view core (monitor/live): `weldmon watch` and the console read the same messages
the same way, because both apply them through it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitor.console.fleet import Fleet
from monitor.events import (
    Source,
    WeldAlert,
    WeldResult,
    WeldStart,
    new_weld_id,
    status_payload_factory,
    topic_for,
)
from monitor.live.messages import apply_message
from monitor.live.topics import classify, parse_prefix
from monitor.watch.state import apply_message as watch_apply
from monitor.watch.state import initial_state

SHA = "9fa888fd5505fb57c8c10ffe5d76129779659e3bff0531a420d717f81f9bc83f"
T0 = datetime(2026, 3, 2, 9, 15, 4, tzinfo=UTC)
PREFIX = "weldmon"
COMMON = {"daemon_version": "0.1.0", "model_sha256": SHA, "station": "cell1"}
SOURCE = Source(type="device", name="mic")


def start(at: datetime) -> WeldStart:
    return WeldStart(
        **COMMON,
        weld_id=new_weld_id("cell1", at),
        source=SOURCE,
        started_at=at,
        segmentation="gate",
        threshold=0.705,
    )


def alert(weld: WeldStart) -> WeldAlert:
    return WeldAlert(
        **COMMON,
        weld_id=weld.weld_id,
        source=SOURCE,
        p_defect=0.8,
        threshold=0.705,
        n_windows=2,
        started_at=weld.started_at,
        at=weld.started_at + timedelta(seconds=2),
    )


def result(weld: WeldStart, label: int) -> WeldResult:
    return WeldResult(
        **COMMON,
        weld_id=weld.weld_id,
        source=SOURCE,
        started_at=weld.started_at,
        ended_at=weld.started_at + timedelta(seconds=3),
        duration_s=3.0,
        label=label,
        label_name="defect" if label else "good_weld",
        p_defect=0.9 if label else 0.1,
        threshold=0.705,
        n_windows=3,
        window_p_max=0.9 if label else 0.1,
        degraded=False,
        dropped_frames=0,
        end_reason="gate",
    )


def a_shift() -> list[tuple[str, bytes]]:
    """Messages as a broker may deliver them: a second alert message for one weld, results
    out of order, a result on another station's topic, a status, a trigger, a teach reply."""
    first, second = start(T0), start(T0 + timedelta(minutes=1))
    late = result(first, 1)
    messages = [
        (f"{PREFIX}/status", status_payload_factory("0.1.0", SHA, "box")("online")),
        (topic_for(first, PREFIX), first.to_json()),
        (topic_for(alert(first), PREFIX), alert(first).to_json()),
        (topic_for(alert(first), PREFIX), alert(first).to_json()),  # another event_id
        (topic_for(second, PREFIX), second.to_json()),
        (topic_for(result(second, 0), PREFIX), result(second, 0).to_json()),
        (f"{PREFIX}/cell2/weld/result", late.to_json()),  # contradicts its topic
        (topic_for(late, PREFIX), late.to_json()),
        (topic_for(late, PREFIX), late.to_json()),  # redelivered
        (f"{PREFIX}/cell1/trigger", b"start"),
        (f"{PREFIX}/teach/reply", b"{}"),
    ]
    return messages


def test_the_watch_and_the_console_keep_the_same_station_from_the_same_messages() -> None:
    watch = initial_state(PREFIX, "b:1883", history=5)
    fleet = Fleet("b:1883", history=5)
    patterns = [parse_prefix(PREFIX)]
    for topic, payload in a_shift():
        watch_apply(watch, topic, payload, T0)
        route = classify(patterns, topic)
        assert route is not None
        if route.kind in ("status", "error", "weld"):  # the console's ingest does the same
            apply_message(fleet, route, topic, payload, T0)
    seen_by_watch = watch.stations["cell1"]
    seen_by_console = fleet.groups[PREFIX].stations["cell1"]
    for station in (seen_by_watch, seen_by_console):
        assert (station.welds, station.defects, station.alerts) == (2, 1, 1)
        assert [v.label_name for v in station.verdicts] == ["good_weld", "defect"]
        assert [v.alerted for v in station.verdicts] == [False, True]
        assert station.current is None
    assert watch.malformed == fleet.malformed == 1  # only the contradicting topic
    assert watch.status is not None and watch.status.state == "online"
