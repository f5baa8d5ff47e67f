"""The outbox file deleted under a running `weldmon run` (issue 22): SQLite would go on
writing into the unlinked file, and a kill afterwards lost every verdict waiting in it. The
daemon (PulseAudio null sink, a real Mosquitto stopped meanwhile, so verdicts wait in the
outbox) must notice, make the file anew with every waiting verdict and open weld in it, say
so, and after a SIGKILL and a restart publish every verdict."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.runtime import OUTBOX_FILE
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ, as_frames, build_shift

pytestmark = [pytest.mark.audio, pytest.mark.broker, pytest.mark.real_data, pytest.mark.slow]

STARTUP_TIMEOUT_S = 90.0
WAIT_S = 60.0
WELDS = [4, 17, 6]  # manifest rows with safely idle heads (tests/support/shifts.py)


def test_a_deleted_outbox_is_made_anew_and_every_verdict_survives_a_kill(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber: Callable[..., MqttCollector],
    recordings: list,
    tmp_path: Path,
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(tmp_path, artifact, mosquitto)
    outbox = tmp_path / "state" / OUTBOX_FILE
    pulse.create_sink("deleted", RATE_HZ, 1)
    shift = build_shift([recordings[i].flac for i in WELDS])
    first = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "first.log")
    player = None
    try:
        first.wait_for_log("ready", STARTUP_TIMEOUT_S)
        mosquitto.stop()  # from here on every verdict waits in the outbox
        player = pulse.play_array(as_frames(shift), RATE_HZ, "deleted")
        first.wait_for_log("weld_result", WAIT_S)  # stored in the file about to go
        outbox.unlink()
        reopened = first.wait_for_log("outbox_reopened", WAIT_S)
        results = first.wait_for_log("weld_result", shift.size / RATE_HZ + WAIT_S, len(WELDS))
        first.proc.send_signal(signal.SIGKILL)
        first.kill()
        player.wait()
    finally:
        if player is not None and player.poll() is None:
            player.kill()
            player.wait()
        first.kill()
    assert reopened[0]["events"] >= 2  # the first weld's start and result at least
    mosquitto.start()
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    second = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "second.log")
    try:
        published = collector.wait_for("weldmon/+/weld/result", len(WELDS), STARTUP_TIMEOUT_S)
        errors = collector.wait_for("weldmon/error", 1, WAIT_S)
        code = second.stop()
    finally:
        second.kill()
    assert code == 0, second.tail()
    assert {json.loads(m.payload)["weld_id"] for m in published} == {
        r["weld_id"] for r in results
    }, "every verdict made before the kill is published after it"
    said = [json.loads(e.payload) for e in errors]
    gone = [e["message"] for e in said if e["code"] == "outbox_degraded"]
    assert gone and "deleted or replaced" in gone[0], said
