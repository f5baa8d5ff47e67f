"""Benchmark: `weldmon evaluate` against the original's loop, same files, artifact and run.

The original's way: for each file, decode it, call the artifact's `forward`, one file at a
time (torch's default threads). Ours: `training.evaluate.judge_files`, `--workers` files in
flight with one intra-op thread each, as `weldmon evaluate` runs by default on a `.pt` with
its ONNX twin beside it (ONNX Runtime; the twin is made with `weldmon convert` in the temp
folder) and as `weldmon evaluate --backend torchscript`. The three alternate `--rounds` times
so a change in the shared machine's load hits all of them.

    .venv/bin/python -m bench.evaluate_throughput [--limit 120] [--workers 2] [--rounds 2]

The files come from a link replica of `full_dataset_runs.csv` (bench/make_replica.py) in a
temporary folder; `--limit` keeps a spread subset (the rate per file extrapolates to the
1,551 runs, as every file is one of the shared 38 s / 25 s recordings).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from bench.make_replica import audio_root, build_replica
from deploy.audio import read_recording
from deploy.convert import convert_artifact
from deploy.loader import load_artifact
from training.dataset import index_dataset
from training.evaluate import judge_files

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT.parent / "shared" / "compat" / "seed_format_deploy_single_label.pt"


def original_loop(model_path: Path, entries: list) -> float:
    """Seconds for decode + artifact.forward, one file at a time."""
    model = load_artifact(model_path, backend="torchscript")
    started = time.perf_counter()
    for entry in entries:
        model.forward(read_recording(entry.path, model.sample_rate).samples)
    return time.perf_counter() - started


def our_loop(model_path: Path, entries: list, workers: int, backend: str) -> float:
    started = time.perf_counter()
    for result in judge_files(model_path, entries, workers=workers, backend=backend):
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
        model = Path(tmp) / "model" / "deploy_single_label.pt"
        model.parent.mkdir()
        shutil.copy(args.model, model)
        convert_artifact(model, model.with_suffix(".onnx"))  # the twin evaluate picks up
        build_replica(Path(tmp) / "data", audio_root(), mode="link", limit=args.limit)
        entries = index_dataset(Path(tmp) / "data").entries
        audio_s = sum(e.duration_s for e in entries)
        warm = entries[:2]
        original_loop(model, warm)  # TorchScript's profiling runs, for both sides
        our_loop(model, warm, args.workers, "auto")
        our_loop(model, warm, args.workers, "torchscript")
        base, auto, script = [], [], []
        for _ in range(args.rounds):
            base.append(original_loop(model, entries))
            auto.append(our_loop(model, entries, args.workers, "auto"))
            script.append(our_loop(model, entries, args.workers, "torchscript"))
    b, o, t = min(base), min(auto), min(script)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"files: {len(entries)} ({audio_s:.0f} s of audio), model {args.model.name}")
    print(f"original loop (decode + forward, one file at a time): {audio_s / b:.0f}x real time")
    print(f"weldmon evaluate, default (ONNX twin, {args.workers} workers): {audio_s / o:.0f}x "
          f"real time, speed-up {b / o:.2f}x")  # fmt: skip
    print(f"weldmon evaluate --backend torchscript ({args.workers} workers): {audio_s / t:.0f}x "
          f"real time, speed-up {b / t:.2f}x")  # fmt: skip
    print(f"(best of {args.rounds} rounds each; extrapolated to 1,551 runs: original "
          f"{b / len(entries) * 1551:.0f} s, default {o / len(entries) * 1551:.0f} s, "
          f"torchscript {t / len(entries) * 1551:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
