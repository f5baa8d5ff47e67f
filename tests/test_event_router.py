"""The event-sink seam: the router hands every event to equal sinks in order, the MQTT
publisher is one of them and stores before any side sink sees the event, and the spool is
the one facade over the outbox. A real SQLite outbox; no broker is needed, because an event
must be durable before `send` returns whether or not one is connected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.events import (
    ErrorEvent,
    Event,
    Source,
    WeldProgress,
    WeldResult,
    WeldStart,
    new_weld_id,
)
from monitor.publish.interrupted import report_interrupted
from monitor.publish.outbox import Outbox
from monitor.publish.publisher import MqttPublisher
from monitor.publish.router import EventRouter, log_event
from monitor.publish.settings import MqttConfig
from monitor.publish.spool import Spool

SHA = "9fa888fd5505fb57c8c10ffe5d76129779659e3bff0531a420d717f81f9bc83f"
T0 = datetime(2026, 3, 2, 9, 15, 4, tzinfo=UTC)
COMMON = {"daemon_version": "0.1.0", "model_sha256": SHA, "station": "cell1"}
SOURCE = Source(type="device", name="mic")
WELD = new_weld_id("cell1", T0)


def start() -> WeldStart:
    return WeldStart(
        **COMMON,
        weld_id=WELD,
        source=SOURCE,
        started_at=T0,
        segmentation="gate",
        threshold=0.705,
    )


def progress() -> WeldProgress:
    return WeldProgress(
        **COMMON,
        weld_id=WELD,
        source=SOURCE,
        window_index=0,
        window_p_defect=0.9,
        p_defect=0.9,
        n_windows=1,
        threshold=0.705,
        elapsed_s=1.0,
    )


def result() -> WeldResult:
    return WeldResult(
        **COMMON,
        weld_id=WELD,
        source=SOURCE,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=2),
        duration_s=2.0,
        label=1,
        label_name="defect",
        p_defect=0.9,
        threshold=0.705,
        n_windows=2,
        window_p_max=0.9,
        degraded=False,
        dropped_frames=0,
        end_reason="gate",
    )


def error() -> ErrorEvent:
    return ErrorEvent(daemon_version="0.1.0", model_sha256=SHA, code="e1", message="x")


def publisher_over(outbox: Outbox | None) -> MqttPublisher:
    settings = MqttConfig(host="127.0.0.1", port=1, client_id="weldmon-router-test")
    return MqttPublisher(settings, outbox, status_payload=None)


def test_the_durable_sink_runs_after_the_journal_and_before_every_side_sink() -> None:
    seen: list[str] = []
    router = EventRouter([log_event, lambda e: seen.append("metrics")])
    router.add(lambda e: seen.append("opcua"))
    router.add(lambda e: seen.append("mqtt"), durable=True)
    router(error())
    assert router.sinks[0] is log_event
    assert seen == ["mqtt", "metrics", "opcua"]
    assert router.counts == {"error": 1}


def test_replay_marks_every_event_before_any_sink_sees_it() -> None:
    seen: list[Event] = []
    router = EventRouter(replay=True)
    router.add(seen.append, durable=True)
    router.add(seen.append)
    router(result())
    assert [e.replay for e in seen] == [True, True]


def test_a_verdict_is_in_the_outbox_before_the_side_sinks_see_it_and_progress_never_is(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "outbox.sqlite3", max_events=100) as outbox:
        publisher = publisher_over(outbox)  # never connected: nothing may be lost for that
        depth_seen_by_side_sink: list[int] = []
        router = EventRouter()
        router.add(publisher.send, durable=True)
        router.add(lambda e: depth_seen_by_side_sink.append(outbox.depth))
        for event in (start(), progress(), result()):
            router(event)
        assert depth_seen_by_side_sink == [1, 1, 2]  # start, (no row for progress), result
        assert [row.topic for row in outbox.pending(10)] == [
            "weldmon/cell1/weld/start",
            "weldmon/cell1/weld/result",
        ]
        assert publisher.spool.depth == 2 and not publisher.counters.connected


def test_the_spool_answers_for_the_outbox_and_for_its_absence(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite3", max_events=100) as outbox:
        publisher = publisher_over(outbox)
        publisher.send(start())
        spool = publisher.spool
        assert [w.weld_id for w in spool.open_welds()] == [WELD]
        assert (spool.over_bound, spool.reopened) == (0, 0)
        emitted: list[WeldResult] = []
        assert report_interrupted(spool, emitted.append) == [WELD]
        assert emitted[0].degraded_reasons == ["interrupted"]
    memory_only = Spool(None)
    assert memory_only.open_welds() == [] and memory_only.over_bound == 0
