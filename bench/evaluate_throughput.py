"""Benchmark: `weldmon evaluate` against the original's loop, same files, artifact and run.

The original's way: for each file, decode it, call the artifact's `forward`, one file at a
time (torch's default threads). Ours: `training.evaluate.judge_files`, `--workers` files in
flight with one torch thread each, both as `weldmon evaluate` (exact: `DeployModel.predict`)
and as `weldmon evaluate --fast` (frozen, BatchNorm-folded classifier). The three alternate
`--rounds` times so a change in the shared machine's load hits all of them.

    .venv/bin/python -m bench.evaluate_throughput [--limit 120] [--workers 2] [--rounds 2]

The files come from a link replica of `full_dataset_runs.csv` (bench/make_replica.py) in a
temporary folder; `--limit` keeps a spread subset (the rate per file extrapolates to the
1,551 runs, as every file is one of the shared 38 s / 25 s recordings).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench.make_replica import audio_root, build_replica
from deploy.audio import read_recording
from deploy.loader import load_artifact
from training.dataset import index_dataset
from training.evaluate import judge_files

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT.parent / "shared" / "compat" / "seed_format_deploy_single_label.pt"


def original_loop(model_path: Path, entries: list) -> float:
    """Seconds for decode + artifact.forward, one file at a time."""
    model = load_artifact(model_path)
    started = time.perf_counter()
    for entry in entries:
        model.forward(read_recording(entry.path, model.sample_rate).samples)
    return time.perf_counter() - started


def our_loop(model_path: Path, entries: list, workers: int, fast: bool) -> float:
    started = time.perf_counter()
    for result in judge_files(model_path, entries, workers=workers, fast=fast):
        if result.error:
            raise RuntimeError(result.error)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--limit", type=int, default=120, help="replica runs to judge")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="weldmon-replica-") as tmp:
        build_replica(Path(tmp), audio_root(), mode="link", limit=args.limit)
        entries = index_dataset(Path(tmp)).entries
        audio_s = sum(e.duration_s for e in entries)
        warm = entries[:2]
        original_loop(args.model, warm)  # TorchScript's profiling runs, for both sides
        our_loop(args.model, warm, args.workers, fast=False)
        our_loop(args.model, warm, args.workers, fast=True)
        base, exact, fast = [], [], []
        for _ in range(args.rounds):
            base.append(original_loop(args.model, entries))
            exact.append(our_loop(args.model, entries, args.workers, fast=False))
            fast.append(our_loop(args.model, entries, args.workers, fast=True))
    b, o, f = min(base), min(exact), min(fast)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"files: {len(entries)} ({audio_s:.0f} s of audio), model {args.model.name}")
    print(f"original loop (decode + forward, one file at a time): {audio_s / b:.0f}x real time")
    print(f"weldmon evaluate, exact ({args.workers} workers): {audio_s / o:.0f}x real time, "
          f"speed-up {b / o:.2f}x")  # fmt: skip
    print(f"weldmon evaluate --fast ({args.workers} workers): {audio_s / f:.0f}x real time, "
          f"speed-up {b / f:.2f}x")  # fmt: skip
    print(f"(best of {args.rounds} rounds each; extrapolated to 1,551 runs: original "
          f"{b / len(entries) * 1551:.0f} s, exact {o / len(entries) * 1551:.0f} s, "
          f"fast {f / len(entries) * 1551:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
