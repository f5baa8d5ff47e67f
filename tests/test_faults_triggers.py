"""Triggers that make no weld, and a command nested too deep to parse (issue 22), against
`weldmon run` in trigger mode (PulseAudio null sink, a real Mosquitto): every ignored
trigger is counted by reason on /metrics and logged, and the nested command is a malformed
message like any other, counted, with the daemon running on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.ops.metrics import TRIGGER_IGNORED_REASONS
from monitor.segment.triggers import TriggerIgnored
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.http import metrics
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ

pytestmark = [pytest.mark.audio, pytest.mark.broker, pytest.mark.slow]

STARTUP_TIMEOUT_S = 90.0
WAIT_S = 30.0
TRIGGER = "weldmon/cell1/trigger"
RELOAD = "weldmon/cmd/reload"
FLOOD = 300  # stops while idle in one burst: more than the 64 a segmenter queues


def ignored(scraped: dict[str, float]) -> dict[str, float]:
    return {r: scraped[f"weldmon_triggers_ignored_total{{reason={r}}}"] for r in TriggerIgnored}


def scraped_when(port: int, done: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """/metrics once `done(scrape)` holds (the daemon copies totals every second), or the
    last scrape after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not done(scraped := metrics(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return scraped


def test_the_metric_lists_every_reason_a_trigger_is_ignored_for() -> None:
    assert set(TRIGGER_IGNORED_REASONS) == {str(r) for r in TriggerIgnored}


def test_ignored_triggers_and_a_too_deep_command_are_counted_and_logged(
    pulse: PulseAudio, mosquitto: MosquittoBroker, mqtt_subscriber, tmp_path: Path
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(tmp_path, artifact, mosquitto, segmentation={"mode": "trigger"})
    pulse.create_sink("triggers", RATE_HZ, 1)  # silence: audio flows, so triggers apply
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log")
    try:
        port = daemon.wait_for_log("http_listening", STARTUP_TIMEOUT_S)[0]["port"]
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
        collector.publish(RELOAD, b"[" * 1020)  # fits the 1 KiB bound, nests past recursion
        collector.publish(TRIGGER, b"stop")  # no weld open
        collector.publish(TRIGGER, b"start")
        collector.wait_for("weldmon/cell1/weld/start", 1, WAIT_S)
        collector.publish(TRIGGER, b"start")  # a weld is open
        collector.publish(TRIGGER, b"stop")
        collector.wait_for("weldmon/cell1/weld/result", 1, WAIT_S)
        for _ in range(FLOOD):
            collector.publish(TRIGGER, b"stop")
        counted = scraped_when(
            port,
            lambda s: (
                sum(ignored(s).values()) >= FLOOD + 2
                and s["weldmon_malformed_messages_total{kind=command}"] == 1
            ),
        )
        lines = daemon.wait_for_log("triggers_ignored", WAIT_S)
        code = daemon.stop()
    finally:
        daemon.kill()
    assert code == 0, daemon.tail()
    assert counted["weldmon_malformed_messages_total{kind=command}"] == 1
    assert not daemon.events("mqtt.on_message_failed")
    by_reason = ignored(counted)
    assert by_reason["start_in_weld"] == 1
    # the flood: each stop either found the queue full or reached the audio with no weld
    assert by_reason["stop_while_idle"] + by_reason["queue_full"] == FLOOD + 1
    assert by_reason["stop_while_idle"] >= 1
    assert sum(by_reason.values()) == FLOOD + 2
    assert len(collector.matching("weldmon/cell1/weld/result")) == 1
    assert lines[0]["station"] == "cell1"
    logged = lines[-1]["totals"]
    assert sum(logged.values()) <= FLOOD + 2 and logged.get("stop_while_idle", 0) >= 1
