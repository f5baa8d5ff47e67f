"""`weldmon run` end to end: a PulseAudio null sink as the sound device, a real Mosquitto,
the daemon as a subprocess. A shift built from the real recordings is played into the sink;
what the daemon publishes is compared with `weldmon replay` of the very same audio."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from deploy.audio import read_recording
from deploy.segment.gate import segment_recording
from tests.support import shifts
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector
from tests.support.daemon import STOP_LIMIT_S, WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio

RATE = 16_000  # the model's rate; the sink runs at it so the capture is bit-comparable
IDLE_S = 3.0  # idle gap before each weld, cut from the recording's own quiet head
WELD_CUT_S = (3.0, 10.0)  # part of each recording played: ~1.5 s idle, then ~5.5 s of arc
STARTUP_TIMEOUT_S = 90.0  # daemon start on a loaded 2-core box (torch import, model load)
RESULT_TIMEOUT_S = 30.0
CLIENT = {"client_id": "weldmon-test"}  # the daemon's MQTT client id
# Manifest rows whose quiet heads stay well under the gate's on-threshold whatever the frame
# phase (checked offline over 50 ms of phases): the device stream starts at an arbitrary
# point of the gate's frame grid, and borderline idle would make the test flaky, not wrong.
# Mixed labels: lack_of_fusion (4, 5), overlap (6, 7), good_weld (17, 18, 22).
SHIFT_RUNS = [4, 6, 17, 5, 22]
LEFT_RUNS = [7, 18]
RIGHT_RUNS = [5, 22, 4]  # after the last weld ends (hang-over + a window + slack)

pytestmark = [pytest.mark.audio, pytest.mark.broker, pytest.mark.real_data, pytest.mark.slow]


def build_shift(recordings: list, indices: list[int]) -> np.ndarray:
    """Welds from the given recordings, each preceded by idle room noise; ends idle."""
    return shifts.build_shift([recordings[i].flac for i in indices], RATE, IDLE_S, WELD_CUT_S)


def _write_config(tmp_path: Path, model: Path, broker: MosquittoBroker, audio: dict) -> Path:
    return write_monitor_config(tmp_path, model, broker, audio=audio, mqtt=CLIENT)


def replay_results(config: Path, audio_file: Path) -> list[dict]:
    cfg = yaml.safe_load(config.read_text())
    cfg["mqtt"] = {"enabled": False}
    cfg["logging"] = {"level": "error"}
    replay_cfg = config.with_name("replay.yaml")
    replay_cfg.write_text(yaml.safe_dump(cfg))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "weldmon.cli",
            "replay",
            "--config",
            str(replay_cfg),
            "--segmentation",
            "gate",
            str(audio_file),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _relative_starts(results: list[dict]) -> list[float]:
    t0 = _ts(results[0]["started_at"])
    return [_ts(r["started_at"]) - t0 for r in results]


def _digest(results: list[dict]) -> list[tuple[float, float, int, float]]:
    starts = _relative_starts(results)
    return [
        (round(s, 2), r["duration_s"], r["label"], round(r["p_defect"], 4))
        for s, r in zip(starts, results, strict=True)
    ]


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return export_untrained(tmp_path / "artifact").path


def _play_and_collect(
    pulse: PulseAudio,
    daemon: WeldmonRun,
    audio: np.ndarray,
    sink: str,
    collector: MqttCollector,
    expected: int,
) -> list[dict]:
    daemon.wait_for_log("capture_opened", STARTUP_TIMEOUT_S)
    collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
    time.sleep(1.0)  # PulseAudio's ALSA plugin delivers its first block after ~0.5-1.5 s
    player = pulse.play_array(audio, RATE, sink)
    assert player.wait(audio.shape[0] / RATE + 30) == 0
    collector.wait_for("weldmon/+/weld/result", expected, RESULT_TIMEOUT_S)
    time.sleep(2.0)  # nothing more may come: exactly one result per weld
    return [json.loads(m.payload) for m in collector.matching("weldmon/+/weld/result")]


def _live_results(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    artifact: Path,
    tmp_path: Path,
    audio: np.ndarray,
    audio_config: dict,
    expected: int,
) -> tuple[list[dict], Path, MqttCollector]:
    """Play `audio` ([frames, channels]) into a new sink while `weldmon run` listens; the
    results it published, its config, and the subscriber (after a clean SIGTERM stop)."""
    sink = f"cell{audio.shape[1]}"
    pulse.create_sink(sink, RATE, audio.shape[1])
    config = _write_config(tmp_path, artifact, mosquitto, audio_config)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.stderr")
    try:
        live = _play_and_collect(pulse, daemon, audio, sink, collector, expected)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    return live, config, collector


def test_daemon_publishes_one_result_per_played_weld_like_replay(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    recordings: list,
    artifact: Path,
    tmp_path: Path,
) -> None:
    shift = build_shift(recordings, SHIFT_RUNS)
    offline = segment_recording(shift, RATE)
    assert len(offline) == 5, "the generated shift must hold five gate welds"
    shift_file = tmp_path / "shift.wav"
    sf.write(shift_file, shift, RATE, subtype="FLOAT")
    live, config, collector = _live_results(
        pulse,
        mosquitto,
        mqtt_subscriber,
        artifact,
        tmp_path,
        shift[:, None],
        {"stations": ["cell1"]},
        5,
    )
    replayed = replay_results(config, shift_file)
    assert len(live) == len(replayed) == 5
    assert {r["station"] for r in live} == {"cell1"}
    assert len({r["weld_id"] for r in live}) == 5
    window_s = 1.0
    seen = (_digest(live), _digest(replayed))  # shown when an assertion fails
    for a, b in zip(_relative_starts(live), _relative_starts(replayed), strict=True):
        assert a == pytest.approx(b, abs=window_s), seen
    for got, want in zip(live, replayed, strict=True):
        assert got["duration_s"] == pytest.approx(want["duration_s"], abs=window_s)
        assert got["label"] == want["label"], seen
        assert got["source"]["type"] == "device"
    status = [json.loads(m.payload)["state"] for m in collector.matching("weldmon/status")]
    assert status[0] == "online" and status[-1] == "stopped"


def test_per_channel_daemon_judges_each_channel_as_its_own_station(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    recordings: list,
    artifact: Path,
    tmp_path: Path,
) -> None:
    left = build_shift(recordings, LEFT_RUNS)
    right = build_shift(recordings, RIGHT_RUNS)
    n = max(left.size, right.size)
    stereo = np.zeros((n, 2), np.float32)
    stereo[: left.size, 0] = left
    stereo[: right.size, 1] = right
    audio = {"channels": 2, "channel_mode": "per_channel", "stations": ["left", "right"]}
    live, _, collector = _live_results(
        pulse, mosquitto, mqtt_subscriber, artifact, tmp_path, stereo, audio, 5
    )
    per_station = {s: [r for r in live if r["station"] == s] for s in ("left", "right")}
    assert (len(per_station["left"]), len(per_station["right"])) == (2, 3)
    topics = {m.topic for m in collector.matching("weldmon/+/weld/result")}
    assert topics == {"weldmon/left/weld/result", "weldmon/right/weld/result"}


def test_sigterm_during_a_weld_reports_it_interrupted_and_exits_cleanly(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    recordings: list,
    artifact: Path,
    tmp_path: Path,
) -> None:
    audio = read_recording(recordings[SHIFT_RUNS[0]].flac, RATE).samples[0]
    pulse.create_sink("cellstop", RATE, 1)
    config = _write_config(tmp_path, artifact, mosquitto, {"stations": ["cell1"]})
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.stderr")
    try:
        daemon.wait_for_log("capture_opened", STARTUP_TIMEOUT_S)
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
        time.sleep(1.0)
        player = pulse.play_array(audio[:, None], RATE, "cellstop")
        collector.wait_for("weldmon/cell1/weld/start", 1, 30.0)
        time.sleep(2.0)  # well inside the arc (it burns for ~25 s)
        started = time.monotonic()
        code = daemon.stop()
        stopped_in = time.monotonic() - started
    finally:
        player.kill()
        player.wait()
        if daemon.proc.poll() is None:
            daemon.stop()
    assert code == 0, daemon.log()[-3000:]
    assert stopped_in < STOP_LIMIT_S
    (result,) = [json.loads(m.payload) for m in collector.matching("weldmon/+/weld/result")]
    assert result["end_reason"] == "shutdown"
    assert result["degraded_reasons"] == ["interrupted"]
    status = [json.loads(m.payload)["state"] for m in collector.matching("weldmon/status")]
    assert status[-1] == "stopped"
