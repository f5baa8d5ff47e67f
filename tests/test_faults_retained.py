"""Retained messages on the daemon's inbound topics: the broker replays them at every
(re)subscribe, so acting on them repeats an old command at each reconnect. `weldmon run` in
trigger mode (PulseAudio null sink, a real Mosquitto that the test restarts) must act on a
trigger or a reload only when it is sent, and ignore and count the retained copies and the
empty payload that clearing one delivers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

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


def counted_when(port: int, **expected: float) -> dict[str, float]:
    """/metrics once the ignored-message counters reach `expected` (the daemon copies the
    publisher's totals into them every second), or the last scrape after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        scraped = metrics(port)
        got = {k: scraped[f"weldmon_inbound_ignored_total{{reason={k}}}"] for k in expected}
        if got == expected or time.monotonic() > deadline:
            return scraped
        time.sleep(0.2)


def test_retained_triggers_and_reloads_are_ignored_and_counted_at_every_connect(
    pulse: PulseAudio, mosquitto: MosquittoBroker, mqtt_subscriber, tmp_path: Path
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(
        tmp_path,
        artifact,
        mosquitto,
        segmentation={"mode": "trigger"},
        mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
    )
    pulse.create_sink("retained", RATE_HZ, 1)  # silence: audio flows, so triggers can open welds
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log")
    try:
        port = daemon.wait_for_log("http_listening", STARTUP_TIMEOUT_S)[0]["port"]
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)

        # Sent while the daemon listens: delivered live (retain flag off), acted on once.
        collector.publish(TRIGGER, b"start", retain=True)
        collector.wait_for("weldmon/cell1/weld/start", 1, WAIT_S)
        collector.publish(TRIGGER, b"stop")
        collector.wait_for("weldmon/cell1/weld/result", 1, WAIT_S)
        collector.publish(RELOAD, b"reload", retain=True)
        daemon.wait_for_log("model_reloaded", WAIT_S)

        # A reconnect: the broker replays both retained messages, flagged retained.
        mosquitto.restart()
        daemon.wait_for_log("mqtt.connected", WAIT_S, count=2)
        replayed = daemon.wait_for_log("mqtt.retained_ignored", WAIT_S, count=2)
        # Clearing the retained reload delivers an empty payload: no reload either.
        collector.publish(RELOAD, b"", retain=True)
        daemon.wait_for_log("mqtt.empty_ignored", WAIT_S)
        counted = counted_when(port, retained=2, empty=1)
        code = daemon.stop()
    finally:
        daemon.kill()
    assert code == 0, daemon.tail()
    assert {r["topic"] for r in replayed} == {TRIGGER, RELOAD}
    starts = collector.matching("weldmon/cell1/weld/start")
    assert len(starts) == 1, "no phantom weld after the reconnect"
    assert len(daemon.events("model_reloaded")) == 1, (
        "no reload from the retained copy or its clearing"
    )
    assert counted["weldmon_inbound_ignored_total{reason=retained}"] == 2
    assert counted["weldmon_inbound_ignored_total{reason=empty}"] == 1
    results = [json.loads(m.payload) for m in collector.matching("weldmon/+/weld/result")]
    assert len(results) == 1
