"""The outbox's disk failing for real under the publisher (issue 22): a loop-mounted ext4
that goes read-only under the open outbox (`tests/support/disks.py`), events sent to a real
Mosquitto, or a tmpfs filled to the last byte and emptied again. Every verdict is published
from memory, the outbox stays degraded while the disk refuses writes (said once, not once per
event) and recovers, once, when it takes writes again."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from monitor.publish.outbox import Outbox
from tests.support.broker import MosquittoBroker, MqttCollector
from tests.support.disks import Ext4Mount, FullDisk
from tests.test_publisher import (
    PREFIX,
    event_ids,
    in_thread,
    make_publisher,
    run,
    settings_for,
    until,
    weld_events,
)

pytestmark = pytest.mark.broker
EVENTS = f"{PREFIX}/+/weld/#"
RETRIES = 4  # failed write-backs to sit through: each would have "recovered" before


def test_a_read_only_outbox_disk_stays_degraded_and_every_verdict_is_published(
    ext4_mount: Ext4Mount,
    mosquitto: MosquittoBroker,
    mqtt_subscriber: Callable[..., MqttCollector],
) -> None:
    collector = mqtt_subscriber(mosquitto, [EVENTS])
    first, second = weld_events(2), weld_events(2)
    states: list[tuple[bool, str]] = []

    async def scenario() -> None:
        with Outbox(ext4_mount.path / "outbox.sqlite3", max_events=1000) as outbox:
            publisher = make_publisher(
                settings_for(mosquitto), outbox, on_outbox_state=lambda *s: states.append(s)
            )
            async with publisher:
                await until(lambda: publisher.counters.connected)
                ext4_mount.fail()
                for event in first:
                    publisher.send(event)
                await in_thread(collector.wait_for, EVENTS, len(first), 20.0)
                spool = publisher.spool
                # Everything held was delivered from memory: a write-back has nothing to
                # store, and must still find out that the disk refuses writes.
                failures = spool.counters.write_failures
                await until(lambda: spool.counters.write_failures >= failures + RETRIES, 60.0)
                for event in second:
                    publisher.send(event)
                total = len(first) + len(second)
                await in_thread(collector.wait_for, EVENTS, total, 20.0)
                assert spool.degraded
                assert [d for d, _ in states] == [True], "degraded once, never 'recovered'"

    with capture_logs() as logs:
        run(scenario())
    assert [r["event"] for r in logs if r["event"].startswith("outbox_")] == ["outbox_degraded"]
    seen = list(dict.fromkeys(event_ids(collector.matching(EVENTS))))
    assert seen == [e.event_id for e in first + second], "every verdict, in order"


def test_a_full_outbox_disk_stays_degraded_until_space_returns_then_recovers_once(
    full_disk: FullDisk,
    mosquitto: MosquittoBroker,
    mqtt_subscriber: Callable[..., MqttCollector],
) -> None:
    collector = mqtt_subscriber(mosquitto, [EVENTS])
    during, after = weld_events(2), weld_events(1)
    states: list[tuple[bool, str]] = []
    path = full_disk.path / "outbox.sqlite3"

    async def scenario() -> None:
        with Outbox(path, max_events=1000) as outbox:
            publisher = make_publisher(
                settings_for(mosquitto), outbox, on_outbox_state=lambda *s: states.append(s)
            )
            async with publisher:
                await until(lambda: publisher.counters.connected)
                full_disk.fill()
                for event in during:
                    publisher.send(event)
                await in_thread(collector.wait_for, EVENTS, len(during), 20.0)
                spool = publisher.spool
                failures = spool.counters.write_failures
                await until(lambda: spool.counters.write_failures >= failures + RETRIES, 60.0)
                assert spool.degraded and [d for d, _ in states] == [True]
                full_disk.free()
                await until(lambda: not spool.degraded, 30.0)
                assert [d for d, _ in states] == [True, False], "recovered once"
                for event in after:
                    publisher.send(event)  # stored again, no longer held
                assert spool.held == 0
                total = len(during) + len(after)
                await in_thread(collector.wait_for, EVENTS, total, 20.0)
                await until(lambda: outbox.depth == 0)

    run(scenario())
    seen = list(dict.fromkeys(event_ids(collector.matching(EVENTS))))
    assert seen == [e.event_id for e in during + after], "every verdict, in order"
