"""Build a full-size replica of the labelled pool from the shared recordings.

`full_dataset_runs.csv` lists the 1,551 runs (run id, top folder, config folder, label code)
of the pool the original evaluated on. Every listed path gets a real recording of the same
class (the same defect type where the shared set has one), round-robin:

- `--mode link` (default): symbolic links; costs no disk, fine for evaluation throughput
  (nothing is cached by content there);
- `--mode perturbed`: real FLAC copies with a per-run gain (+-2 dB) and noise at -80 dBFS,
  so every file has distinct content, as the training data path's content-keyed cache needs
  for an honest benchmark. About 0.6 MB and 50 ms per run.

`--limit N` keeps N runs (classes in the pool's proportion, evenly spaced through the list)
for a quicker benchmark whose figures extrapolate per file.

    .venv/bin/python -m bench.make_replica OUT [--mode link|perturbed] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_AUDIO = REPO_ROOT.parent / "shared" / "weld-audio"
GAIN_DB_RANGE = 2.0  # +- dB per perturbed copy: a different recording level, same sound
NOISE_DBFS = -80.0  # added white noise: below the 16-bit floor's audible effect, changes bytes
GOOD_CODE = "00"


@dataclass(frozen=True)
class ReplicaRun:
    run_id: str
    top: str
    config_folder: str
    label_code: str
    source: Path

    def path(self, root: Path) -> Path:
        return root / self.top / self.config_folder / self.run_id / f"{self.run_id}.flac"


def audio_root() -> Path:
    return Path(os.environ.get("WELDMON_WELD_AUDIO", DEFAULT_AUDIO))


def plan_replica(source_root: Path, limit: int | None = None) -> list[ReplicaRun]:
    """Which shared recording stands in for each listed run."""
    with (source_root / "manifest.csv").open(newline="") as fh:
        manifest = list(csv.DictReader(fh))
    with (source_root / "full_dataset_runs.csv").open(newline="") as fh:
        pool = list(csv.DictReader(fh))
    by_code: dict[str, list[Path]] = {}
    for row in manifest:
        by_code.setdefault(row["label_code"], []).append(source_root / row["flac"])
    defects = [p for code, paths in sorted(by_code.items()) if code != GOOD_CODE for p in paths]
    if limit is not None and limit < len(pool):
        step = len(pool) / limit
        pool = [pool[int(i * step)] for i in range(limit)]
    counters: dict[str, int] = {}
    runs = []
    for row in pool:
        code = row["label_code"]
        candidates = by_code.get(code) or (by_code[GOOD_CODE] if code == GOOD_CODE else defects)
        i = counters.get(code, 0)
        counters[code] = i + 1
        source = candidates[i % len(candidates)]
        runs.append(ReplicaRun(row["run_id"], row["root"], row["config_folder"], code, source))
    return runs


def build_replica(
    out: Path, source_root: Path, *, mode: str = "link", limit: int | None = None, seed: int = 0
) -> list[ReplicaRun]:
    """Create the replica tree under `out`; returns the runs written."""
    rng = np.random.default_rng(seed)
    runs = plan_replica(source_root, limit)
    for run in runs:
        dest = run.path(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if mode == "link":
            dest.symlink_to(run.source.resolve())
            continue
        samples, rate = sf.read(str(run.source), dtype="float32", always_2d=True)
        gain = 10.0 ** (rng.uniform(-GAIN_DB_RANGE, GAIN_DB_RANGE) / 20.0)
        noise = rng.standard_normal(samples.shape).astype(np.float32) * 10.0 ** (NOISE_DBFS / 20.0)
        sf.write(str(dest), np.clip(samples * gain + noise, -1.0, 1.0), rate, subtype="PCM_16")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="replica root to create (must not exist)")
    parser.add_argument("--mode", choices=("link", "perturbed"), default="link")
    parser.add_argument("--limit", type=int, help="keep only this many runs")
    parser.add_argument("--source", type=Path, default=audio_root(), help="shared recordings")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; choose a new folder")
    runs = build_replica(args.out, args.source, mode=args.mode, limit=args.limit)
    good = sum(r.label_code == GOOD_CODE for r in runs)
    print(f"replica: {len(runs)} runs ({good} good, {len(runs) - good} defect) under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
