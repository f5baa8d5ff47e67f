"""`weldmon run` end to end: CPU, resident memory and result latency, 48 kHz, 1/4/8 channels.

For each channel count: a private PulseAudio null sink at 48 kHz (tests/support/pulse.py) and
a Mosquitto broker (tests/support/broker.py); a shift generated from the shared recordings
(welds cut from them, resampled to 48 kHz, each channel its own welds) is played into the
sink while `weldmon run` records it as a subprocess with an untrained seeded project artifact.

- CPU: the daemon's user+system time while the shift plays (all its threads), in % of one
  core. PulseAudio's and Mosquitto's CPU are not included. ``cpu_by_part`` splits it by
  thread from the daemon's own ``weldmon_thread_cpu_seconds_total`` (loop = the event loop:
  resampling, segmentation, windows, tracker, MQTT; capture; audio_callback = PortAudio's
  callback; inference; http; other = libpulse's client thread, ONNX Runtime's pool, the rest).
- Idle (``--idle-s``, default 20 s): the same before the shift, the sink silent (digital
  silence, no weld): ``idle_cpu_pct`` and ``idle_cpu_by_part``.
- Memory: the daemon's VmRSS at the end and its peak (VmHWM).
- Latency: each weld_result's arrival at a subscriber minus the moment the weld's last audio
  sample became available at the sound device. Two references:
  * `ended_at` (the required definition, the headline figure): the daemon's own timestamp of
    that sample, from its sample clock mapped to UTC per stream epoch by
    `monitor.audio.epoch_clock.FrameZeroClock` (the minimum over callbacks of callback time minus
    frames delivered / rate, refined over the epoch's first seconds).
  * `avail_`: a cross-check independent of the daemon's clock. The bench records the same
    monitor source itself (10 ms callbacks) and dates its frame 0 with the same estimator
    over the whole recording; the played array's first sample is found in that recording
    (first non-zero sample: the sink delivers exact zeros before playback). The daemon's end
    boundaries are placed on the array through the median difference between its weld
    starts and the same segmenter's starts over the array offline (the daemon's clock is linear
    in its samples, so one offset serves every weld).
  `clock_offset_ms` = the daemon's UTC for a sample minus the time that sample became
  available (negative: its timestamps are early); within +-50 ms the two latencies agree.

    .venv/bin/python -m bench.monitor_run --channels 1 4 8 --mode per_channel --repeat 3

``--segmentation gate crackle`` alternates the two audio segmenters run by run (a same-run
comparison on a shared machine); the default is the daemon's default mode.

``--shadow off on`` alternates runs without and with a shadow model (a second untrained
artifact of the same contract, config section ``shadow``), so the budget with a candidate in
shadow is measured against the same machine's run without one: ``cpu_pct`` is the whole
daemon's, ``shadow_results`` counts the shadow verdicts that reached the broker.

`--backend onnx` runs the artifact's ONNX twin under ONNX Runtime (`inference.backend`);
`--python PATH` starts the daemon with another interpreter, e.g. the torch-free base install
of tests/support/base_venv.py, for the resident memory of a box without torch.

The machine is shared, so each configuration can be repeated (``--repeat``): every run prints
its own line, with the 1-minute load average at its start, and the spread is what to report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np
import sounddevice as sd
import soxr
import yaml

from deploy.audio import RESAMPLE_QUALITY, read_recording
from deploy.segment.factory import DEFAULT_MODE, audio_only_segmenter
from deploy.segment.modes import SegmentationMode
from deploy.segment.offline import segment_recording
from monitor.audio.epoch_clock import FrameZeroClock
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector, free_port
from tests.support.data import weld_audio_root
from tests.support.pulse import PulseAudio, reinitialise_portaudio

MODEL_RATE_HZ = 16_000  # the artifact's rate: the gate runs on the resampled station audio
RATE_HZ = 48_000  # the common native rate of USB interfaces (the required benchmark rate)
IDLE_S = 3.0  # idle room noise before each weld (from the recording's quiet head)
WELD_CUT_S = (3.0, 10.0)  # part of each recording played: ~1.5 s idle, ~5.5 s arc
# Recordings whose heads stay idle for the gate whatever the frame phase (tests/test_daemon).
RUNS = [4, 6, 17, 5, 22, 7, 18]
TAP_BLOCK_S = 0.01  # the bench's reference recording: 10 ms callbacks time each frame closely
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


def thread_cpu(port: int) -> dict[str, float]:
    """The daemon's ``weldmon_thread_cpu_seconds_total`` by part (monitor/ops/thread_cpu.py)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    parts = {}
    for m in re.finditer(r'^weldmon_thread_cpu_seconds_total\{part="([^"]+)"\} (\S+)$', text, re.M):
        parts[m.group(1)] = float(m.group(2))
    return parts


def cpu_by_part(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict:
    """% of one core per part between two scrapes."""
    return {k: round(100 * (after[k] - before.get(k, 0.0)) / wall_s, 2) for k in sorted(after)}


def _utc(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def offline_starts_s(
    station_audio: list[np.ndarray], segmentation: SegmentationMode
) -> list[list[float]]:
    """Per station, the segmenter's weld starts (s into the played array), as the daemon
    resamples."""
    starts = []
    for audio in station_audio:
        mono = soxr.resample(audio, RATE_HZ, MODEL_RATE_HZ, quality=RESAMPLE_QUALITY)
        segmenter = audio_only_segmenter(segmentation, MODEL_RATE_HZ)
        welds = segment_recording(mono, MODEL_RATE_HZ, segmenter)
        starts.append([a / MODEL_RATE_HZ for a, _ in welds])
    return starts


class ReferenceTap:
    """The bench's own recording of the monitor source: when each frame became available."""

    def __init__(self, channels: int) -> None:
        # Refined over the whole recording: the bench wants the best estimate, not a frozen one.
        self.clock = FrameZeroClock(RATE_HZ, refine_s=math.inf)
        self.first_nonzero: int | None = None  # frame index of the first non-zero sample
        self._frames = 0
        self._stream = sd.InputStream(
            device="pulse",
            samplerate=RATE_HZ,
            channels=channels,
            dtype="float32",
            blocksize=round(TAP_BLOCK_S * RATE_HZ),
            callback=self._on_audio,
        )
        self._stream.start()

    def _on_audio(self, indata: np.ndarray, frames: int, _time: object, _status: object) -> None:
        now = time.time()
        if self.first_nonzero is None:
            hits = np.flatnonzero(indata[:, 0])
            if hits.size:
                self.first_nonzero = self._frames + int(hits[0])
        self._frames += frames
        self.clock.observe(now, self._frames)

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()

    def origin_utc(self) -> float:
        """UTC at which frame 0 became available: the latest time no callback contradicts."""
        utc = self.clock.utc
        if utc is None:
            raise RuntimeError("the reference recording received no callback")
        return utc


def availability_latencies_s(
    results: list[dict],
    arrivals_utc: list[float],
    stations: list[str],
    starts: list[list[float]],
    array_zero_utc: float,
) -> tuple[list[float], float | None]:
    """Arrival minus the UTC at which the weld's end sample became available, and the daemon
    clock's error (s); empty / None when no station's welds pair up with the offline ones.
    ``array_zero_utc``: when the played array's first sample became available."""
    by_station: dict[str, list[int]] = {name: [] for name in stations}
    for i, r in enumerate(results):
        by_station[r["station"]].append(i)
    diffs = []
    for name, offline in zip(stations, starts, strict=True):
        mine = sorted(by_station[name], key=lambda i: _utc(results[i]["started_at"]))
        if len(mine) != len(offline):
            continue
        diffs += [_utc(results[i]["started_at"]) - s for i, s in zip(mine, offline, strict=True)]
    if not diffs:
        return [], None
    daemon_minus_array = float(np.median(diffs))  # daemon UTC of array time 0
    lat = [
        arrival - (array_zero_utc + _utc(r["ended_at"]) - daemon_minus_array)
        for r, arrival in zip(results, arrivals_utc, strict=True)
    ]
    return lat, daemon_minus_array - array_zero_utc


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(values) * 1000, q)), 0) if values else None


def run_one(
    channels: int,
    mode: str,
    n_welds: int,
    workdir: Path,
    pulse: PulseAudio,
    backend: str = "torchscript",
    python: str = sys.executable,
    segmentation: SegmentationMode = DEFAULT_MODE,
    shadow: bool = False,
    idle_s: float = 0.0,
) -> dict:
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
    artifact = export_untrained(workdir / "artifact", onnx=backend == "onnx").path
    candidate = export_untrained(workdir / "candidate", seed=11, onnx=backend == "onnx").path
    state = workdir / f"state{channels}{mode}"
    state.mkdir()
    stations = [f"st{c + 1}" for c in range(channels)] if mode == "per_channel" else ["mix"]
    config = workdir / f"monitor{channels}{mode}.yaml"
    http_port = free_port()
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
                "inference": {"backend": backend},
                "segmentation": {"mode": segmentation.value},
                "state_dir": str(state),
                "logging": {"level": "info"},
                "http": {"host": "127.0.0.1", "port": http_port},
                "shadow": {"path": str(candidate)} if shadow else None,
            }
        )
    )
    collector = MqttCollector(broker, ["weldmon/#"]).start()
    log = (workdir / f"daemon{channels}{mode}.log").open("wb")
    proc = subprocess.Popen(
        [python, "-m", "weldmon.cli", "run", "--config", str(config)],
        env=pulse.subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    load_at_start = os.getloadavg()[0]
    try:
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
        time.sleep(3.0)  # capture open and first audio
        idle: dict = {}
        if idle_s > 0:  # the sink plays nothing: digital silence, no weld
            parts0, c0, i0 = thread_cpu(http_port), cpu_seconds(proc.pid), time.monotonic()
            time.sleep(idle_s)
            parts1, c1, i1 = thread_cpu(http_port), cpu_seconds(proc.pid), time.monotonic()
            idle = {
                "idle_cpu_pct": round(100 * (c1 - c0) / (i1 - i0), 2),
                "idle_cpu_by_part": cpu_by_part(parts0, parts1, i1 - i0),
            }
        tap = ReferenceTap(channels)
        parts0 = thread_cpu(http_port)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        player = pulse.play_array(audio, RATE_HZ, sink)
        player.wait(audio.shape[0] / RATE_HZ + 60)
        time.sleep(DRAIN_S)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        by_part = cpu_by_part(parts0, thread_cpu(http_port), t1 - t0)
        rss, hwm = memory_mb(proc.pid)
        tap.close()
        results = collector.matching("weldmon/+/weld/result")
        shadow_results = len(collector.matching("weldmon/+/shadow/result"))
        now_utc, now_mono = time.time(), time.monotonic()
        payloads = [json.loads(m.payload) for m in results]
        arrivals = [now_utc - (now_mono - m.at) for m in results]
        latencies = [a - _utc(p["ended_at"]) for a, p in zip(arrivals, payloads, strict=True)]
    finally:
        proc.terminate()
        code = proc.wait(15)
        log.close()
        collector.stop()
        broker.stop()
        pulse.remove_sink(sink)
    station_audio = shifts if mode == "per_channel" else [audio.mean(axis=1)]
    if tap.first_nonzero is None:
        raise RuntimeError("the reference recording never heard the played audio")
    array_first_nonzero = int(np.flatnonzero(audio[:, 0])[0])
    array_zero_utc = tap.origin_utc() + (tap.first_nonzero - array_first_nonzero) / RATE_HZ
    avail, clock_offset = availability_latencies_s(
        payloads, arrivals, stations, offline_starts_s(station_audio, segmentation), array_zero_utc
    )
    return {
        "channels": channels,
        "mode": mode,
        "segmentation": segmentation.value,
        "backend": backend,
        "shadow": shadow,
        "shadow_results": shadow_results,
        "torch_installed": torch_installed(python),
        "audio_s": round(audio.shape[0] / RATE_HZ, 1),
        "cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "cpu_by_part": by_part,
        **idle,
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(hwm, 1),
        "results": len(results),
        "expected": channels * n_welds if mode == "per_channel" else None,
        "latency_p50_ms": _ms(latencies, 50),
        "latency_p99_ms": _ms(latencies, 99),
        "avail_latency_p50_ms": _ms(avail, 50),
        "avail_latency_p99_ms": _ms(avail, 99),
        "clock_offset_ms": None if clock_offset is None else round(clock_offset * 1000),
        "exit_code": code,
        "load_1min": round(load_at_start, 1),
    }


def torch_installed(python: str) -> bool:
    """Whether the daemon's interpreter can import torch at all."""
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=120)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--mode", choices=("per_channel", "mix"), default="per_channel")
    parser.add_argument("--welds", type=int, default=4, help="welds per channel")
    parser.add_argument("--repeat", type=int, default=1, help="runs per channel count")
    parser.add_argument("--backend", choices=("torchscript", "onnx"), default="torchscript")
    parser.add_argument("--python", default=sys.executable, help="the daemon's interpreter")
    parser.add_argument(
        "--segmentation",
        nargs="+",
        choices=("crackle", "gate"),
        default=[DEFAULT_MODE.value],
        help="segmentation mode(s); several alternate run by run, for same-run comparisons",
    )
    parser.add_argument(
        "--shadow",
        nargs="+",
        choices=("off", "on"),
        default=["off"],
        help="without / with a shadow model; both alternate run by run (same-run comparison)",
    )
    parser.add_argument(
        "--idle-s",
        type=float,
        default=20.0,
        help="s of the idle daemon measured before each shift (the sink silent); 0: none",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="weldmon-bench-"))
    pulse = PulseAudio.start(workdir / "pulse")
    os.environ.update(pulse.env)
    reinitialise_portaudio()  # PortAudio listed devices at import, before this server existed
    try:
        print(
            f"# {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
            f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}"
        )
        for channels in args.channels:
            for run in range(args.repeat):
                for seg in args.segmentation:
                    for shadow in args.shadow:
                        rundir = workdir / f"run{channels}-{run}-{seg}-{shadow}"
                        rundir.mkdir()
                        result = run_one(
                            channels,
                            args.mode,
                            args.welds,
                            rundir,
                            pulse,
                            args.backend,
                            args.python,
                            SegmentationMode(seg),
                            shadow=shadow == "on",
                            idle_s=args.idle_s,
                        )
                        print(json.dumps(result), flush=True)
    finally:
        pulse.stop()


if __name__ == "__main__":
    main()
