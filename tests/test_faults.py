"""Fault injection on `weldmon run` (the robustness acceptance): the broker goes away, the daemon is
killed, the sound device disappears. Everything is real: a PulseAudio null sink as the device,
a Mosquitto broker the test stops and restarts on the same port, the daemon as a subprocess,
a shift built from the shared recordings played into the sink.

SIGTERM during a weld (`interrupted`, `stopped`, exit 0) is tested in tests/test_daemon.py.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from monitor.runtime import OUTBOX_FILE
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector, ReceivedMessage
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ, as_frames, build_shift, weld_clip

STARTUP_TIMEOUT_S = 90.0  # daemon start on a loaded 2-core box (torch import, model load)
RESULT_TIMEOUT_S = 30.0  # a weld's result after its audio was played
BROKER_OUTAGE_S = 30.0  # required: broker stopped for 30 s in the middle of a shift
PLAYBACK_START_S = 1.0  # PulseAudio's ALSA plugin delivers its first block after ~0.5-1.5 s
# Back-off of the daemon's reconnect loops, short so the tests do not wait out a 60 s cap;
# the loops themselves (jitter, cap, one attempt at a time) are what runs in production.
MQTT_RECONNECT_S = (0.2, 1.0)
DEVICE_RETRY_S = (0.2, 1.0)
DEVICE_BACK_WITHIN_S = 5.0  # required: capture resumes within 5 s of the device returning
# Welds with safely idle heads (tests/support/shifts.py), mixed labels.
SHIFT_RUNS = [4, 6, 17, 5, 22]
RESULTS = "weldmon/+/weld/result"

pytestmark = [pytest.mark.audio, pytest.mark.broker, pytest.mark.real_data, pytest.mark.slow]


def write_config(tmp_path: Path, model: Path, broker: MosquittoBroker) -> Path:
    return write_monitor_config(
        tmp_path,
        model,
        broker,
        audio={"retry_min_s": DEVICE_RETRY_S[0], "retry_max_s": DEVICE_RETRY_S[1]},
        mqtt={
            "client_id": "weldmon-faults",
            "reconnect_min_s": MQTT_RECONNECT_S[0],
            "reconnect_max_s": MQTT_RECONNECT_S[1],
        },
    )


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return export_untrained(tmp_path / "artifact").path


@pytest.fixture
def shift(recordings: list) -> np.ndarray:
    return build_shift([recordings[i].flac for i in SHIFT_RUNS])


@pytest.fixture
def cleanup() -> list:
    """Daemons and players a test started; killed after it whatever happened."""
    started: list = []
    yield started
    for thing in started:
        if isinstance(thing, WeldmonRun):
            thing.kill()
        elif thing.poll() is None:
            thing.kill()
            thing.wait()


def _unique(messages: list[ReceivedMessage]) -> dict[str, dict]:
    """Payloads by event_id: delivery is at-least-once, consumers deduplicate on it."""
    out: dict[str, dict] = {}
    for m in messages:
        payload = json.loads(m.payload)
        out.setdefault(payload["event_id"], payload)
    return out


def _received_weld_ids(collector: MqttCollector) -> set[str]:
    return {p["weld_id"] for p in _unique(collector.matching(RESULTS)).values()}


def _start(daemon: WeldmonRun, collector: MqttCollector) -> None:
    daemon.wait_for_log("capture_opened", STARTUP_TIMEOUT_S)
    collector.wait_until(
        lambda ms: any(_is_live_status(m, "online") for m in ms), STARTUP_TIMEOUT_S
    )
    time.sleep(PLAYBACK_START_S)


def _is_live_status(m: ReceivedMessage, state: str) -> bool:
    # Live deliveries arrive with retain=False; a retained copy replayed on re-subscribe
    # (retain=True) could be an old one.
    return m.topic == "weldmon/status" and not m.retain and json.loads(m.payload)["state"] == state


def _shift_playing(
    sink: str,
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    shift: np.ndarray,
    artifact: Path,
    tmp_path: Path,
    cleanup: list,
    log_name: str,
) -> tuple[Path, MqttCollector, WeldmonRun, subprocess.Popen]:
    """A daemon judging `shift` played into a new sink, a persistent subscriber (its own
    reconnects lose nothing), and the first result already arrived."""
    pulse.create_sink(sink, RATE_HZ, 1)
    config = write_config(tmp_path, artifact, mosquitto)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"], client_id="line-pc", clean_session=False)
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / log_name)
    cleanup.append(daemon)
    _start(daemon, collector)
    player = pulse.play_array(as_frames(shift), RATE_HZ, sink)
    cleanup.append(player)
    collector.wait_for(RESULTS, 1, RESULT_TIMEOUT_S)
    return config, collector, daemon, player


def test_welds_judged_while_the_broker_was_down_for_30_s_all_arrive_after_it_returns(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    shift: np.ndarray,
    artifact: Path,
    tmp_path: Path,
    cleanup: list,
) -> None:
    _, collector, daemon, player = _shift_playing(
        "outage",
        pulse,
        mosquitto,
        mqtt_subscriber,
        shift,
        artifact,
        tmp_path,
        cleanup,
        "daemon.log",
    )

    mosquitto.stop()
    time.sleep(BROKER_OUTAGE_S)
    judged_during_outage = len(daemon.events("weld_result")) - 1
    mosquitto.start()
    back_at = time.monotonic()

    assert player.wait(shift.shape[0] / RATE_HZ + RESULT_TIMEOUT_S) == 0
    logged = daemon.wait_for_log("weld_result", RESULT_TIMEOUT_S, count=len(SHIFT_RUNS))
    expected = {r["weld_id"] for r in logged}
    collector.wait_until(lambda _: _received_weld_ids(collector) >= expected, RESULT_TIMEOUT_S)
    code = daemon.stop()

    assert code == 0, daemon.tail()
    assert judged_during_outage >= 2, "the outage must cover whole welds"
    assert len(expected) == len(SHIFT_RUNS)
    assert _received_weld_ids(collector) == expected, "no weld_id may be missing"
    online_again = [m for m in collector.messages if _is_live_status(m, "online")]
    assert any(m.at > back_at for m in online_again), "status must go online again"


def _outbox_results(state_dir: Path) -> dict[str, bytes]:
    """Result payloads still in the outbox, by event_id (opened after the daemon died)."""
    db = sqlite3.connect(state_dir / OUTBOX_FILE)
    try:
        rows = db.execute(
            "SELECT event_id, payload FROM outbox WHERE topic LIKE '%/weld/result' ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    return {event_id: bytes(payload) for event_id, payload in rows}


def test_results_in_the_outbox_when_the_daemon_is_killed_are_delivered_after_both_restart(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    shift: np.ndarray,
    artifact: Path,
    tmp_path: Path,
    cleanup: list,
) -> None:
    config, collector, daemon, player = _shift_playing(
        "killed",
        pulse,
        mosquitto,
        mqtt_subscriber,
        shift,
        artifact,
        tmp_path,
        cleanup,
        "daemon1.log",
    )

    mosquitto.stop()
    daemon.wait_for_log("weld_result", 2 * RESULT_TIMEOUT_S, count=3)  # two during the outage
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.kill()
    player.kill()
    logged = {r["weld_id"] for r in daemon.events("weld_result")}
    delivered_before = _received_weld_ids(collector)
    pending = _outbox_results(tmp_path / "state")
    pending_welds = {json.loads(p)["weld_id"] for p in pending.values()}

    assert len(pending) >= 2, "results judged while the broker was down wait in the outbox"
    assert logged <= delivered_before | pending_welds, "a judged weld is in neither place"

    mosquitto.start()
    restarted = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon2.log")
    cleanup.append(restarted)
    restarted.wait_for_log("mqtt.connected", STARTUP_TIMEOUT_S)
    collector.wait_until(
        lambda _: set(pending) <= set(_unique(collector.matching(RESULTS))), RESULT_TIMEOUT_S
    )
    code = restarted.stop()

    assert code == 0, restarted.tail()
    redelivered = {m.payload for m in collector.matching(RESULTS)}
    assert set(pending.values()) <= redelivered, "replayed byte for byte: same ids and times"
    assert _received_weld_ids(collector) >= logged


def test_capture_resumes_after_the_sink_is_removed_and_recreated_and_the_cut_weld_is_degraded(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    recordings: list,
    artifact: Path,
    tmp_path: Path,
    cleanup: list,
) -> None:
    pulse.create_sink("lost", RATE_HZ, 1)
    config = write_config(tmp_path, artifact, mosquitto)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log")
    cleanup.append(daemon)
    _start(daemon, collector)
    # ~20 s of arc: the segmenter decides a start seconds into it (the crackle segmenter's
    # look-back), and the sink must go while the arc still burns.
    long_weld = weld_clip(recordings[SHIFT_RUNS[0]].flac, cut_s=(3.0, 25.0))
    first = pulse.play_array(as_frames(long_weld), RATE_HZ, "lost")
    cleanup.append(first)
    collector.wait_for("weldmon/cell1/weld/start", 1, RESULT_TIMEOUT_S)
    time.sleep(2.0)  # inside the arc

    pulse.remove_sink("lost")
    first.kill()
    cut = json.loads(collector.wait_for(RESULTS, 1, RESULT_TIMEOUT_S)[0].payload)
    errors = [json.loads(m.payload) for m in collector.wait_for("weldmon/error", 1, 10.0)]
    time.sleep(2 * DEVICE_RETRY_S[1])  # a few reopen attempts fail while the sink is gone
    opened_before = len(daemon.events("capture_opened"))
    pulse.create_sink("lost", RATE_HZ, 1)
    back = time.monotonic()
    daemon.wait_for_log("capture_opened", 2 * DEVICE_BACK_WITHIN_S, count=opened_before + 1)
    reopened_in = time.monotonic() - back
    time.sleep(PLAYBACK_START_S)
    later_weld = build_shift([recordings[SHIFT_RUNS[2]].flac])
    second = pulse.play_array(as_frames(later_weld), RATE_HZ, "lost")
    cleanup.append(second)
    results = collector.wait_for(RESULTS, 2, later_weld.size / RATE_HZ + RESULT_TIMEOUT_S)
    code = daemon.stop()

    assert code == 0, daemon.tail()
    assert cut["end_reason"] == "device_lost"
    assert "device_lost" in cut["degraded_reasons"] and cut["degraded"] is True
    assert "device_lost" in [e["code"] for e in errors]
    assert reopened_in < DEVICE_BACK_WITHIN_S
    judged_later = json.loads(results[-1].payload)
    assert judged_later["weld_id"] != cut["weld_id"]
    assert "device_lost" not in judged_later["degraded_reasons"]
    assert judged_later["n_windows"] >= 1
