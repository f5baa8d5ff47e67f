"""`weldmon run` end to end: CPU, resident memory and result latency, 48 kHz, 1/4/8 channels.

For each channel count: a private PulseAudio null sink at 48 kHz (tests/support/pulse.py) and
a Mosquitto broker (tests/support/broker.py); a shift generated from the shared recordings
(welds cut from them, resampled to 48 kHz, each channel its own welds) is played into the
sink while `weldmon run` records it as a subprocess with an untrained seeded project artifact.

- CPU: the daemon's user+system time while the shift plays (all its threads), in % of one
  core. PulseAudio's and Mosquitto's CPU are not included.
- Memory: the daemon's VmRSS at the end and its peak (VmHWM).
- Latency: each weld_result's arrival at a subscriber minus the weld's `ended_at` (its last
  audio sample on the daemon's sample clock, mapped to UTC once per stream start).

    .venv/bin/python -m bench.monitor_run --channels 1 4 8 --mode per_channel
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

from deploy.audio import read_recording
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector
from tests.support.data import weld_audio_root
from tests.support.pulse import PulseAudio

RATE_HZ = 48_000  # the common native rate of USB interfaces (the benchmark rate)
IDLE_S = 3.0  # idle room noise before each weld (from the recording's quiet head)
WELD_CUT_S = (3.0, 10.0)  # part of each recording played: ~1.5 s idle, ~5.5 s arc
# Recordings whose heads stay idle for the gate whatever the frame phase (tests/test_daemon).
RUNS = [4, 6, 17, 5, 22, 7, 18]
STARTUP_TIMEOUT_S = 120.0
DRAIN_S = 5.0  # after playback: hang-over + last window + publish
PAGE_TICKS = os.sysconf("SC_CLK_TCK")


def _manifest() -> list[Path]:
    import csv

    root = weld_audio_root()
    with (root / "manifest.csv").open() as fh:
        return [root / row["flac"] for row in csv.DictReader(fh)]


def channel_shift(flacs: list[Path], runs: list[int]) -> np.ndarray:
    parts = []
    for i in runs:
        audio = read_recording(flacs[i], RATE_HZ).samples[0]
        parts += [audio[: int(IDLE_S * RATE_HZ)]]
        parts += [audio[int(WELD_CUT_S[0] * RATE_HZ) : int(WELD_CUT_S[1] * RATE_HZ)]]
    parts.append(read_recording(flacs[runs[-1]], RATE_HZ).samples[0][: int(IDLE_S * RATE_HZ)])
    return np.concatenate(parts).astype(np.float32)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / PAGE_TICKS  # utime + stime


def memory_mb(pid: int) -> tuple[float, float]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def _utc(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_one(channels: int, mode: str, n_welds: int, workdir: Path, pulse: PulseAudio) -> dict:
    flacs = _manifest()
    shifts = [
        channel_shift(flacs, [RUNS[(c + k) % len(RUNS)] for k in range(n_welds)])
        for c in range(channels)
    ]
    audio = np.stack(shifts, axis=1)
    sink = f"bench{channels}{mode[:3]}"
    pulse.create_sink(sink, RATE_HZ, channels)
    broker = MosquittoBroker(workdir / f"broker{channels}{mode}")
    broker.start()
    artifact = export_untrained(workdir / "artifact").path
    state = workdir / f"state{channels}{mode}"
    state.mkdir()
    stations = [f"st{c + 1}" for c in range(channels)] if mode == "per_channel" else ["mix"]
    config = workdir / f"monitor{channels}{mode}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(artifact)},
                "audio": {
                    "device": "pulse",
                    "samplerate": RATE_HZ,
                    "channels": channels,
                    "channel_mode": mode,
                    "stations": stations,
                },
                "mqtt": {"host": broker.host, "port": broker.port, "client_id": "weldmon-bench"},
                "state_dir": str(state),
                "logging": {"level": "info"},
            }
        )
    )
    collector = MqttCollector(broker, ["weldmon/#"]).start()
    log = (workdir / f"daemon{channels}{mode}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "weldmon.cli", "run", "--config", str(config)],
        env=pulse.subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
        time.sleep(3.0)  # capture open and first audio
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        player = pulse.play_array(audio, RATE_HZ, sink)
        player.wait(audio.shape[0] / RATE_HZ + 60)
        time.sleep(DRAIN_S)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        rss, hwm = memory_mb(proc.pid)
        results = collector.matching("weldmon/+/weld/result")
        now_utc, now_mono = time.time(), time.monotonic()
        latencies = [
            now_utc - (now_mono - m.at) - _utc(json.loads(m.payload)["ended_at"]) for m in results
        ]
    finally:
        proc.terminate()
        code = proc.wait(15)
        log.close()
        collector.stop()
        broker.stop()
        pulse.remove_sink(sink)
    lat = np.array(latencies) * 1000
    return {
        "channels": channels,
        "mode": mode,
        "audio_s": round(audio.shape[0] / RATE_HZ, 1),
        "cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(hwm, 1),
        "results": len(results),
        "expected": channels * n_welds if mode == "per_channel" else None,
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 0) if lat.size else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 0) if lat.size else None,
        "exit_code": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--mode", choices=("per_channel", "mix"), default="per_channel")
    parser.add_argument("--welds", type=int, default=4, help="welds per channel")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="weldmon-bench-"))
    pulse = PulseAudio.start(workdir / "pulse")
    os.environ.update(pulse.env)
    try:
        print(
            f"# {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
            f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}"
        )
        for channels in args.channels:
            print(json.dumps(run_one(channels, args.mode, args.welds, workdir, pulse)), flush=True)
    finally:
        pulse.stop()


if __name__ == "__main__":
    main()
