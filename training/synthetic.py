"""A small synthetic labelled dataset laid out like the real one, for fast tests and the demo.

Good welds are steady arc-like noise: a spectrally tilted noise floor plus a mains-like hum
with harmonics, both slowly amplitude-modulated. Defect welds are the same signal with
crackle bursts (short loud broadband clicks, several per second) and arc dropouts (the level
falls for 50-150 ms), which is enough for the CNN to learn in a few epochs. Every config
folder gets its own tilt and hum pitch, so config folders differ the way real ones do.

    python -m training.synthetic OUT_DIR [--configs-per-class 3] [--runs-per-config 3]
        [--duration 4] [--idle 0] [--seed 0]

writes `OUT_DIR/good_weld/...`, `OUT_DIR/defect_data_weld/...`, `OUT_DIR/manifest.csv` and
`OUT_DIR/train.tiny.yaml`, a training config that learns this set in well under a minute::

    weldmon train --config OUT_DIR/train.tiny.yaml --run-dir RUN
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from training.dataset import LABEL_CODES, TOP_FOLDERS

SAMPLE_RATE = 16000  # Hz, the real dataset's rate
DEFAULT_CONFIGS_PER_CLASS = 3  # config folders of good and of defect welds
DEFAULT_RUNS_PER_CONFIG = 3  # runs per config folder
DEFAULT_DURATION_S = 4.0  # s per recording: 4 windows, seconds to generate and to train on
DEFECT_CODES = ("02", "06", "07", "08")  # cycled over the defect config folders
PEAK_LEVEL = 0.5  # full-scale peak after normalisation: headroom for 16-bit FLAC
HUM_BASE_HZ = (100.0, 180.0)  # range of the per-config hum fundamental (Hz)
HUM_HARMONICS = 4  # harmonics of the hum
TILT_RANGE = (0.3, 1.0)  # noise spectrum ~ 1/f^tilt; per-config exponent range
CRACKLE_RATE_HZ = 8.0  # mean crackle bursts per second in defect welds
CRACKLE_MS = (3.0, 15.0)  # burst duration range (ms)
CRACKLE_GAIN = 6.0  # burst amplitude relative to the arc noise RMS
DROPOUT_RATE_HZ = 1.5  # mean arc dropouts per second in defect welds
DROPOUT_MS = (50.0, 150.0)  # dropout duration range (ms)
DROPOUT_LEVEL = 0.05  # residual level during a dropout
TINY_CONFIG_NAME = "train.tiny.yaml"
IDLE_RMS = 0.001  # room noise before/after the arc when idle_s > 0 (~ -60 dBFS, like a quiet cell)
ARC_RAMP_S = 0.01  # s, arc ignition/extinction ramp: abrupt like a real arc, but click-free


@dataclass(frozen=True)
class SyntheticRun:
    run_id: str
    label_code: str
    config_folder: str
    path: Path


def _tilted_noise(rng: np.random.Generator, n: int, tilt: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum /= np.maximum(freqs, 20.0) ** (tilt / 2.0)  # power ~ 1/f^tilt, flat below 20 Hz
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.std(noise) + 1e-12)


def arc_signal(rng: np.random.Generator, n: int, tilt: float, hum_hz: float) -> np.ndarray:
    """Steady arc-like sound of `n` samples (unit RMS noise floor plus hum)."""
    t = np.arange(n) / SAMPLE_RATE
    out = _tilted_noise(rng, n, tilt)
    for h in range(1, HUM_HARMONICS + 1):
        out += (0.5 / h) * np.sin(2 * np.pi * hum_hz * h * t + rng.uniform(0, 2 * np.pi))
    wobble = 1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)  # slow level drift
    return out * wobble


def add_defects(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Crackle bursts and arc dropouts at Poisson times over the whole recording."""
    y = x.copy()
    duration_s = len(x) / SAMPLE_RATE
    for _ in range(rng.poisson(CRACKLE_RATE_HZ * duration_s)):
        length = int(rng.uniform(*CRACKLE_MS) * SAMPLE_RATE / 1000)
        start = int(rng.integers(0, max(1, len(x) - length)))
        burst = rng.standard_normal(length) * np.hanning(length) * CRACKLE_GAIN
        y[start : start + length] += burst
    for _ in range(rng.poisson(DROPOUT_RATE_HZ * duration_s)):
        length = int(rng.uniform(*DROPOUT_MS) * SAMPLE_RATE / 1000)
        start = int(rng.integers(0, max(1, len(x) - length)))
        y[start : start + length] *= DROPOUT_LEVEL
    return y


def with_idle(
    rng: np.random.Generator, arc: np.ndarray, head_s: float, tail_s: float
) -> np.ndarray:
    """Room noise, the arc (ramped in and out), room noise: a whole recording like the real
    ones, whose arc burns in the middle. Head and tail vary per run, so ignition and extinction
    fall anywhere inside a window, as they do for a monitor that cuts windows from a detected
    weld start; a model trained on these has seen such windows labelled by their bag."""
    n_head, n_tail = round(head_s * SAMPLE_RATE), round(tail_s * SAMPLE_RATE)
    ramp = np.ones(len(arc))
    n_ramp = min(round(ARC_RAMP_S * SAMPLE_RATE), len(arc) // 2)
    if n_ramp:
        ramp[:n_ramp] = np.linspace(0.0, 1.0, n_ramp)
        ramp[-n_ramp:] = np.linspace(1.0, 0.0, n_ramp)
    idle = rng.standard_normal(n_head + n_tail) * IDLE_RMS
    return np.concatenate([idle[:n_head], arc * ramp, idle[n_head:]])


def generate_synthetic_dataset(
    root: Path,
    *,
    configs_per_class: int = DEFAULT_CONFIGS_PER_CLASS,
    runs_per_config: int = DEFAULT_RUNS_PER_CONFIG,
    duration_s: float = DEFAULT_DURATION_S,
    idle_s: float = 0.0,
    seed: int = 0,
    one_cell: bool = False,
) -> list[SyntheticRun]:
    """Write the dataset under `root` (16 kHz mono 16-bit FLAC + manifest.csv); same seed,
    same files. With `idle_s`, each recording has room noise before and after its arc, each
    between 0.5 and 1.5 times `idle_s` (drawn per run), and the arc fills the rest. With
    `one_cell`, every config folder shares one tilt and hum (one cell, one microphone), so
    good and defect welds differ only by the defects themselves."""
    if not 0.0 <= 3 * idle_s < duration_s:
        raise ValueError(f"idle_s={idle_s} leaves no arc in a {duration_s} s recording")
    rng = np.random.default_rng(seed)
    n_total = round(duration_s * SAMPLE_RATE)
    runs: list[SyntheticRun] = []
    # Drawn only for one_cell: an extra draw would change every other set this seed makes.
    cell = (rng.uniform(*TILT_RANGE), rng.uniform(*HUM_BASE_HZ)) if one_cell else None
    for is_defect in (False, True):
        for c in range(configs_per_class):
            code = DEFECT_CODES[c % len(DEFECT_CODES)] if is_defect else "00"
            month = 2 if is_defect else 1
            date = f"{month:02d}-{c + 1:02d}-24"
            if is_defect:
                folder = f"{LABEL_CODES[code]}_synthetic_{c + 1}_{date}"
            else:
                folder = f"good_weld_synthetic_{c + 1}_{date}"
            tilt = rng.uniform(*TILT_RANGE)
            hum = rng.uniform(*HUM_BASE_HZ)
            if cell is not None:
                tilt, hum = cell
            for r in range(runs_per_config):
                run_id = f"{date}-{r + 1:04d}-{code}"
                head_s, tail_s = rng.uniform(0.5, 1.5, size=2) * idle_s
                n = n_total - round(head_s * SAMPLE_RATE) - round(tail_s * SAMPLE_RATE)
                x = arc_signal(rng, n, tilt, hum)
                if is_defect:
                    x = add_defects(rng, x)
                x = x * (PEAK_LEVEL / np.max(np.abs(x)))
                if idle_s:
                    x = with_idle(rng, x, head_s, tail_s)
                x = x.astype(np.float32)
                top = TOP_FOLDERS[1] if is_defect else TOP_FOLDERS[0]
                path = root / top / folder / run_id / f"{run_id}.flac"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), x, SAMPLE_RATE, subtype="PCM_16")
                runs.append(SyntheticRun(run_id, code, folder, path))
    _write_manifest(root, runs, duration_s)
    return runs


def _write_manifest(root: Path, runs: list[SyntheticRun], duration_s: float) -> None:
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["run_id", "label_code", "label", "config_folder", "flac", "duration_s", "sha1"]
        )
        for run in runs:
            sha1 = hashlib.sha1(run.path.read_bytes()).hexdigest()
            writer.writerow(
                [
                    run.run_id,
                    run.label_code,
                    LABEL_CODES[run.label_code],
                    run.config_folder,
                    run.path.relative_to(root).as_posix(),
                    f"{duration_s:.2f}",
                    sha1,
                ]
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out", type=Path, help="dataset root to create")
    parser.add_argument("--configs-per-class", type=int, default=DEFAULT_CONFIGS_PER_CLASS)
    parser.add_argument("--runs-per-config", type=int, default=DEFAULT_RUNS_PER_CONFIG)
    parser.add_argument(
        "--duration", type=float, default=DEFAULT_DURATION_S, help="seconds per run"
    )
    parser.add_argument(
        "--idle", type=float, default=0.0, help="seconds of room noise before and after the arc"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    runs = generate_synthetic_dataset(
        args.out,
        configs_per_class=args.configs_per_class,
        runs_per_config=args.runs_per_config,
        duration_s=args.duration,
        idle_s=args.idle,
        seed=args.seed,
    )
    config = args.out / TINY_CONFIG_NAME
    # Synthetic arcs are steady tones: the arc gate finds them, the crackle segmenter (the
    # daemon's default, which `auto` falls back to without a sensor log) hears no crackle.
    values = tiny_config_values(args.out.resolve(), "gate" if args.idle else "file")
    config.write_text(yaml.safe_dump(values, sort_keys=False))
    print(f"wrote {len(runs)} synthetic recordings under {args.out}")
    print(f"tiny training config: {config}")
    return 0


def tiny_config_values(data_root: Path, segmentation: str = "file") -> dict[str, object]:
    """A training config that learns the default synthetic set in seconds (tests, demo).

    The default set has no idle noise around its arcs, so nothing could segment it: its
    recordings are judged whole (`file`); a set made with `idle_s` takes `gate` (its arcs are
    steady tones with no crackle for the daemon's default segmenter to hear)."""
    return {
        "data_root": str(data_root),
        "segmentation": segmentation,
        "epochs": 3,
        "batch_size": 4,
        "lr": 1e-3,
        "warmup_fraction": 0.2,
        "val_fraction": 0.34,
        "patience": 3,
        "num_threads": 1,
        "ensemble": 1,  # one model: seconds, not K times that (ensemble tests set their K)
    }


if __name__ == "__main__":
    sys.exit(main())
