"""CPU cost of live capture: SoundDeviceCapture on a PulseAudio null sink at 48 kHz.

Starts a private PulseAudio daemon (tests/support/pulse.py), opens a null sink with 1, 4 and
8 channels, plays noise into it and reads blocks for `--seconds` as the daemon's capture thread
would (read, keep nothing). Reports this process's CPU time (user + system, all threads: the
PortAudio callback, the libpulse client thread inside ALSA's pulse plugin, the reader) as a
percentage of one core. The PulseAudio server's own CPU is not included.

    .venv/bin/python -m bench.capture_cpu --seconds 20
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from monitor.audio.capture import DEFAULT_CALLBACK_BLOCK_S, CaptureSettings, SoundDeviceCapture
from tests.support.pulse import PulseAudio, reinitialise_portaudio

RATE_HZ = 48_000  # the common native rate of USB interfaces
CHANNEL_COUNTS = (1, 4, 8)
DEFAULT_SECONDS = 20.0  # s per configuration: long enough to average out start-up
READ_TIMEOUT_S = 0.5
BLOCK_S = 0.1  # s per read, as the daemon's block_s
NOISE_LEVEL = 0.05  # amplitude of the noise played (any non-silent level works)
SEED = 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(server: PulseAudio, channels: int, seconds: float, blocksize: int) -> dict[str, float]:
    """CPU % of one core and counters while capturing `channels` at RATE_HZ for `seconds`."""
    sink = f"bench{channels}ch"
    server.create_sink(sink, RATE_HZ, channels)
    noise = np.random.default_rng(SEED).uniform(
        -NOISE_LEVEL, NOISE_LEVEL, (round((seconds + 5) * RATE_HZ), channels)
    )
    player = server.play_array(noise.astype(np.float32), RATE_HZ, sink)
    settings = CaptureSettings(
        device="pulse",
        sample_rate_hz=RATE_HZ,
        channels=channels,
        callback_block_s=blocksize / RATE_HZ,
    )
    frames = 0
    try:
        with SoundDeviceCapture(settings) as capture:
            max_frames = round(BLOCK_S * RATE_HZ)
            while capture.read(READ_TIMEOUT_S, max_frames) is None:
                pass  # start-up (PulseAudio takes ~1 s) is not measured
            cpu0, wall0 = cpu_seconds(), time.monotonic()
            while time.monotonic() - wall0 < seconds:
                block = capture.read(READ_TIMEOUT_S, max_frames)
                frames += 0 if block is None else block.frames
            cpu, wall = cpu_seconds() - cpu0, time.monotonic() - wall0
            counters = capture.counters()
    finally:
        player.kill()
        player.wait()
        server.remove_sink(sink)
    return {
        "channels": channels,
        "cpu_percent": 100 * cpu / wall,
        "realtime_ratio": frames / RATE_HZ / wall,
        "overflows": counters.input_overflows,
        "dropped": counters.dropped_frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument(
        "--blocksize",
        type=int,
        default=round(DEFAULT_CALLBACK_BLOCK_S * RATE_HZ),
        help="frames per callback (0: PortAudio picks)",
    )
    args = parser.parse_args()
    server = PulseAudio.start(Path(tempfile.mkdtemp(prefix="weldmon-bench-pulse-")))
    try:
        os.environ.update(server.env)
        reinitialise_portaudio()
        rows = [
            measure(server, channels, args.seconds, args.blocksize) for channels in CHANNEL_COUNTS
        ]
    finally:
        server.stop()
    print(
        f"capture CPU, {RATE_HZ} Hz, {args.seconds:g} s each, blocksize {args.blocksize}, "
        f"{platform.node()}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print("| channels | CPU % of one core | audio s / wall s | overflows | dropped frames |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['channels']} | {r['cpu_percent']:.1f} | {r['realtime_ratio']:.3f} "
            f"| {r['overflows']} | {r['dropped']} |"
        )


if __name__ == "__main__":
    main()
