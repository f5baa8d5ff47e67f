"""A failing outbox disk under the publisher: a second process holds the outbox's SQLite
write lock (`tests/support/sqlite_lock.py`) while events are sent to a real Mosquitto.

Every verdict must still be published (from memory), the failure must be said once, and
once the lock goes every held event must be in the outbox file; the daemon-level test
(`tests/test_faults_daemon.py`) adds the error event, the metric and /healthz.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.publish.outbox import Outbox
from monitor.runtime import OUTBOX_FILE
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector
from tests.support.daemon import REPO_ROOT, WeldmonRun, write_monitor_config
from tests.support.http import healthz, metrics
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ, as_frames, build_shift
from tests.support.sqlite_lock import SqliteLock
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


def stored_event_ids(path: Path) -> list[str]:
    """The event ids in the outbox file, read by a connection of our own (WAL: readable
    while another holds the write lock)."""
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT event_id FROM outbox ORDER BY seq")]
    finally:
        db.close()


def test_a_locked_outbox_still_publishes_and_stores_every_held_event_once_it_is_free(
    mosquitto: MosquittoBroker, mqtt_subscriber: Callable[..., MqttCollector], tmp_path: Path
) -> None:
    collector = mqtt_subscriber(mosquitto, [EVENTS], client_id="line-pc", clean_session=False)
    first, second = weld_events(1), weld_events(2)
    path = tmp_path / "outbox.sqlite3"
    states: list[tuple[bool, str]] = []

    async def scenario() -> None:
        with Outbox(path, max_events=1000) as outbox:
            publisher = make_publisher(
                settings_for(mosquitto), outbox, on_outbox_state=lambda *s: states.append(s)
            )
            async with publisher:
                await until(lambda: publisher.counters.connected)
                lock = await in_thread(SqliteLock, path)
                try:
                    for event in first:
                        publisher.send(event)  # must neither raise nor lose the event
                    got = await in_thread(collector.wait_for, EVENTS, len(first), 20.0)
                    assert event_ids(got) == [e.event_id for e in first], "published from memory"
                    assert publisher.spool.degraded
                    assert [d for d, _ in states] == [True], "said once"
                    assert "cannot be written" in states[0][1] and "locked" in states[0][1]
                    await in_thread(mosquitto.stop)
                    await until(lambda: not publisher.counters.connected)
                    for event in second:
                        publisher.send(event)  # neither disk nor broker: memory only
                    assert publisher.spool.held == len(second)
                    assert stored_event_ids(path) == []
                finally:
                    await in_thread(lock.release)
                await until(lambda: not publisher.spool.degraded, 30.0)
                assert [d for d, _ in states] == [True, False]
                assert stored_event_ids(path) == [e.event_id for e in second], "nothing lost"
                await in_thread(mosquitto.start)
                total = len(first) + len(second)
                await in_thread(
                    collector.wait_until, lambda ms: len(set(event_ids(ms))) >= total, 30.0
                )
                await until(lambda: outbox.depth == 0)
        seen = list(dict.fromkeys(event_ids(collector.matching(EVENTS))))
        assert seen == [e.event_id for e in first + second], "every event, in order"

    run(scenario())


def test_events_the_outbox_never_took_are_logged_with_their_payload_at_close(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.sqlite3"
    events = weld_events(1)

    async def scenario() -> None:
        with Outbox(path, max_events=1000) as outbox:
            publisher = make_publisher(settings_for(mosquitto), outbox)
            async with publisher:
                await until(lambda: publisher.counters.connected)
                await in_thread(mosquitto.stop)
                await until(lambda: not publisher.counters.connected)
                with SqliteLock(path):
                    for event in events:
                        publisher.send(event)
                    with capture_logs() as logs:
                        await publisher.close(timeout_s=1.0)
        lost = [r for r in logs if r["event"] == "outbox_lost_on_exit"]
        assert [r["event_id"] for r in lost] == [e.event_id for e in events]
        assert all(r["payload"] == e.to_json().decode() for r, e in zip(lost, events, strict=True))

    asyncio.run(scenario())


# -- the daemon: weldmon run against a null sink, a broker and a locked outbox ----------------

STARTUP_TIMEOUT_S = 90.0  # torch import and model load on a loaded 2-core box
RESULT_TIMEOUT_S = 30.0
LOCKED_WELDS = [4, 17]  # manifest rows with safely idle heads (tests/support/shifts.py)


@pytest.mark.audio
@pytest.mark.real_data
@pytest.mark.slow
def test_the_daemon_judges_and_publishes_through_a_locked_outbox_and_says_so(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber: Callable[..., MqttCollector],
    recordings: list,
    tmp_path: Path,
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(tmp_path, artifact, mosquitto)
    pulse.create_sink("locked", RATE_HZ, 1)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log")
    player = None
    try:
        port = daemon.wait_for_log("http_listening", STARTUP_TIMEOUT_S)[0]["port"]
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
        with SqliteLock(tmp_path / "state" / OUTBOX_FILE):
            shift = build_shift([recordings[i].flac for i in LOCKED_WELDS])
            player = pulse.play_array(as_frames(shift), RATE_HZ, "locked")
            results = collector.wait_for(
                "weldmon/+/weld/result", 2, shift.size / RATE_HZ + RESULT_TIMEOUT_S
            )
            (error,) = collector.wait_for("weldmon/error", 1, RESULT_TIMEOUT_S)
            status, health = healthz(port)
            degraded_gauge = metrics(port)["weldmon_outbox_degraded"]
        daemon.wait_for_log("outbox_recovered", 60.0)
        status_after, health_after = healthz(port)
        gauge_after = metrics(port)["weldmon_outbox_degraded"]
        code = daemon.stop()
    finally:
        if player is not None and player.poll() is None:
            player.kill()
            player.wait()
        daemon.kill()
    assert code == 0, daemon.tail()
    assert not daemon.events("daemon_failed")
    assert len({json.loads(m.payload)["weld_id"] for m in results}) == 2, "both welds judged"
    assert json.loads(error.payload)["code"] == "outbox_degraded"
    assert status == 503
    assert any("outbox cannot be written" in r for r in health["reasons"]), health
    assert (degraded_gauge, gauge_after) == (1.0, 0.0)
    assert not any("outbox" in r for r in health_after.get("reasons", [])), (
        status_after,
        health_after,
    )


@pytest.mark.real_data
def test_a_corrupt_outbox_stops_run_with_exit_2_and_says_so_on_stderr(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Exit 2 (RestartPreventExitStatus=2): restarting cannot mend the file, an operator
    must move it aside, and the unit must not restart ten times into the same error."""
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(tmp_path, artifact, mosquitto)
    outbox = tmp_path / "state" / OUTBOX_FILE
    outbox.write_bytes(b"\x00not a database\xff" * 64)
    done = subprocess.run(
        [sys.executable, "-m", "weldmon.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    assert f"weldmon run: cannot open outbox {outbox}" in done.stderr
    assert "move it aside" in done.stderr
