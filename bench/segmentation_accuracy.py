"""Arc-gate accuracy on the shared real recordings, and its robustness to gain, noise and a
long shift of concatenated welds.

For every recording: the clock offset between sensor log and audio (estimated from the
broadband audio level envelope, not from the gate), the true arc start/end from the log
(offset-corrected), the gate's start/end and the errors. Then the same with the audio
attenuated by 20 dB, amplified by 6 dB, with white noise added, and a shift of all
recordings joined by idle gaps (built in a temporary folder, read back as one FLAC).

    .venv/bin/python bench/segmentation_accuracy.py [--weld-audio DIR] [--markdown]

Prints plain text tables (or Markdown with --markdown, for docs/segmentation.md).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from deploy.segment.gate import GateParams, GateSegmenter, segment_recording  # noqa: E402
from deploy.segment.levels import frame_rms_db  # noqa: E402
from deploy.sensorlog import arc_intervals, estimate_clock_offset, read_sensor_log  # noqa: E402

# Frame of the broadband envelope used for the clock offset (s): matches the log's ~0.1 s
# row spacing at twice its resolution.
OFFSET_FRAME_S = 0.05
# Acceptance tolerance on start and end (s), as in tests/test_segmentation.py.
TOLERANCE_S = 0.5
# Robustness cases: gain (dB) applied to the recording.
GAINS_DB = (-20.0, 6.0)
# White noise added at these levels (dBFS RMS): the quietest idle floors are -77 dBFS
# broadband, the loudest -63, the arc -48 to -52.
NOISE_DBFS = (-75.0, -70.0, -65.0)
# Idle gap between welds in the concatenated shift (s): cycle time of a part change.
SHIFT_GAP_S = 8.0
NOISE_SEED = 20240917
# Block length (s) for the streaming cost: the daemon's default audio.block_s.
COST_BLOCK_S = 0.1
# Repeats of the cost measurement: the machine is shared, so report the spread.
COST_REPEATS = 5


@dataclass(frozen=True)
class Truth:
    run_id: str
    flac: Path
    offset_s: float
    start_s: float  # arc start on the audio clock
    end_s: float


def weld_audio_root(cli_value: str | None) -> Path:
    """The recordings: --weld-audio, else $WELDMON_WELD_AUDIO, else ../shared/weld-audio."""
    if cli_value:
        return Path(cli_value)
    default = REPO_ROOT.parent / "shared" / "weld-audio"
    return Path(os.environ.get("WELDMON_WELD_AUDIO", default))


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    return samples.mean(axis=1), rate


def ground_truth(flac: Path, run_id: str) -> Truth:
    """Arc start/end from the sensor log, moved onto the audio clock by the estimated offset."""
    samples, rate = read_audio(flac)
    frame_len = round(OFFSET_FRAME_S * rate)
    whole = samples[: samples.size // frame_len * frame_len]
    log = read_sensor_log(flac.with_suffix(".csv"))
    offset = estimate_clock_offset(log, frame_rms_db(whole, frame_len), frame_len / rate)
    arcs = arc_intervals(log)
    return Truth(run_id, flac, offset, arcs[0][0] + offset, arcs[-1][1] + offset)


def detect(samples: np.ndarray, rate: int, params: GateParams) -> list[tuple[float, float]]:
    return [(a / rate, b / rate) for a, b in segment_recording(samples, rate, params)]


def errors_row(truth: Truth, welds: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(start error, end error) in s (detected minus true), or None unless exactly one weld."""
    if len(welds) != 1:
        return None
    return welds[0][0] - truth.start_s, welds[0][1] - truth.end_s


def summarise(name: str, rows: list[tuple[float, float] | None]) -> str:
    found = [r for r in rows if r is not None]
    bad = len(rows) - len(found)
    if not found:
        return f"| {name} | {len(rows)} | {bad} | - | - | - |"
    err = np.abs(np.array(found))
    within = int(np.sum(np.all(err <= TOLERANCE_S, axis=1)))
    return (
        f"| {name} | {len(rows)} | {bad} | {within}/{len(rows)} "
        f"| {err[:, 0].mean():.2f} / {err[:, 0].max():.2f} "
        f"| {err[:, 1].mean():.2f} / {err[:, 1].max():.2f} |"
    )


def per_recording_table(
    truths: list[Truth], params: GateParams
) -> list[tuple[float, float] | None]:
    print(
        "| run | offset s | arc start s | arc end s | gate start s | gate end s "
        "| start err s | end err s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for t in truths:
        samples, rate = read_audio(t.flac)
        welds = detect(samples, rate, params)
        row = errors_row(t, welds)
        rows.append(row)
        if row is None:
            print(
                f"| {t.run_id} | {t.offset_s:+.2f} | {t.start_s:.2f} | {t.end_s:.2f} "
                f"| {len(welds)} welds: {welds} | | | |"
            )
            continue
        print(
            f"| {t.run_id} | {t.offset_s:+.2f} | {t.start_s:.2f} | {t.end_s:.2f} "
            f"| {welds[0][0]:.2f} | {welds[0][1]:.2f} | {row[0]:+.2f} | {row[1]:+.2f} |"
        )
    return rows


def perturbed(
    truths: list[Truth], params: GateParams, change: Callable[[np.ndarray], np.ndarray]
) -> list[tuple[float, float] | None]:
    rows = []
    for t in truths:
        samples, rate = read_audio(t.flac)
        rows.append(errors_row(t, detect(change(samples), rate, params)))
    return rows


def shift_case(truths: list[Truth], params: GateParams) -> tuple[str, float]:
    """All recordings joined by idle gaps (taken from each file's own quiet lead-in), written
    to a temporary FLAC and read back; returns a summary line and the shift itself."""
    rate = 0
    parts: list[np.ndarray] = []
    expected: list[tuple[float, float]] = []
    cursor = 0
    for t in truths:
        samples, rate = read_audio(t.flac)
        lead_in = samples[: int(max(0.0, t.start_s - 1.5) * rate)]  # idle, before ignition
        reps = int(np.ceil(SHIFT_GAP_S * rate / max(1, lead_in.size)))
        gap = np.tile(lead_in, reps)[: int(SHIFT_GAP_S * rate)]
        parts.extend((gap, samples))
        base = (cursor + gap.size) / rate
        expected.append((base + t.start_s, base + t.end_s))
        cursor += gap.size + samples.size
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shift.flac"
        sf.write(path, np.concatenate(parts), rate, subtype="PCM_16")
        shift, rate = read_audio(path)
    welds = detect(shift, rate, params)
    matched = 0
    worst = 0.0
    for a, b in expected:
        hits = [w for w in welds if w[0] < b and w[1] > a]
        # One weld for this recording, and that weld overlaps no other recording's arc.
        owners = [e for e in expected if hits and hits[0][0] < e[1] and hits[0][1] > e[0]]
        if len(hits) == 1 and len(owners) == 1:
            matched += 1
            worst = max(worst, abs(hits[0][0] - a), abs(hits[0][1] - b))
    line = (
        f"shift of {len(truths)} recordings ({shift.size / rate / 60:.1f} min, {SHIFT_GAP_S:g} s "
        f"idle gaps): {len(welds)} welds found, {matched}/{len(truths)} recordings matched by "
        f"exactly one weld, worst boundary error {worst:.2f} s"
    )
    return line, shift, rate


def streaming_cost(samples: np.ndarray, rate: int, params: GateParams) -> list[float]:
    """CPU time (process time, not wall clock) per second of audio of one GateSegmenter fed
    ``COST_BLOCK_S`` blocks, as the daemon feeds it; one figure per repeat."""
    block = round(COST_BLOCK_S * rate)
    costs = []
    for _ in range(COST_REPEATS):
        gate = GateSegmenter(params, rate)
        began = time.process_time()
        for pos in range(0, samples.size, block):
            gate.process(samples[pos : pos + block], pos)
        gate.close(samples.size)
        costs.append((time.process_time() - began) / (samples.size / rate))
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weld-audio", help="folder of the recordings (with manifest.csv)")
    args = parser.parse_args(argv)
    root = weld_audio_root(args.weld_audio)
    with (root / "manifest.csv").open(newline="") as fh:
        manifest = list(csv.DictReader(fh))
    params = GateParams()
    print(
        f"Machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}); date {datetime.now(UTC):%Y-%m-%d}"
    )
    print(f"Gate parameters: {params.model_dump()}")
    print()
    truths = [ground_truth(root / r["flac"], r["run_id"]) for r in manifest]
    baseline = per_recording_table(truths, params)
    print()
    print(
        "| case | recordings | not exactly one weld | both within 0.5 s "
        "| start err mean / max s | end err mean / max s |"
    )
    print("|---|---|---|---|---|---|")
    print(summarise("as recorded", baseline))
    for gain in GAINS_DB:
        factor = np.float32(10.0 ** (gain / 20.0))
        rows = perturbed(truths, params, lambda x, f=factor: np.clip(x * f, -1.0, 1.0))
        print(summarise(f"gain {gain:+g} dB", rows))
    rng = np.random.default_rng(NOISE_SEED)
    for noise_db in NOISE_DBFS:
        sigma = 10.0 ** (noise_db / 20.0)
        rows = perturbed(
            truths,
            params,
            lambda x, s=sigma: x + rng.normal(0.0, s, x.size).astype(np.float32),
        )
        print(summarise(f"white noise {noise_db:g} dBFS added", rows))
    print()
    line, shift, rate = shift_case(truths, params)
    print(line)
    costs = sorted(c * 1e3 for c in streaming_cost(shift, rate, params))
    print(
        f"gate cost, {COST_BLOCK_S * 1e3:g} ms blocks: {costs[len(costs) // 2]:.2f} ms of CPU per "
        f"second of audio per channel (median of {len(costs)}; min {costs[0]:.2f}, max "
        f"{costs[-1]:.2f}); load average {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
