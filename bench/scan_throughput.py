"""Benchmark: `weldmon scan` (one decode and one batched forward per file) against a naive loop
that calls the model one window at a time, on the same files and artifact, in the same run.

    python bench/scan_throughput.py [--model PATH] [--audio-root DIR] [--repeat N]

Prints windows/s and x real time for both, and the ratio. Defaults: the compat artifact and
the shared recordings.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from deploy.audio import read_recording
from deploy.loader import load_artifact
from deploy.scan import scan

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def naive(model, files: list[Path]) -> int:
    """The notebook's way: decode, then one model call per window."""
    n = 0
    with torch.inference_mode():
        for path in files:
            samples = torch.from_numpy(read_recording(path, model.sample_rate).samples)
            mono = samples.mean(dim=0)
            for start in range(0, mono.numel() - model.chunk_samples + 1, model.chunk_samples):
                model.module(mono[start : start + model.chunk_samples].unsqueeze(0))
                n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", type=Path, default=SHARED / "compat/seed_format_deploy_single_label.pt"
    )
    ap.add_argument("--audio-root", type=Path, default=SHARED / "weld-audio")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the files (best kept)")
    args = ap.parse_args()
    model = load_artifact(args.model)
    files = sorted(args.audio_root.rglob("*.flac"))
    audio_s = sum(read_recording(f, model.sample_rate).duration_s for f in files)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"{len(files)} files, {audio_s:.0f} s of audio, model {model.sha256[:12]}")
    best: dict[str, float] = {}
    windows: dict[str, int] = {}
    for _ in range(args.repeat):
        t = time.perf_counter()
        report = scan(model, files, progress=False)
        best["scan"] = min(best.get("scan", 1e9), time.perf_counter() - t)
        windows["scan"] = report.windows
        t = time.perf_counter()
        windows["naive"] = naive(model, files)
        best["naive"] = min(best.get("naive", 1e9), time.perf_counter() - t)
    for name in ("naive", "scan"):
        s = best[name]
        print(
            f"{name:>6}: {s:7.2f} s  {windows[name] / s:8.1f} windows/s  "
            f"{audio_s / s:7.1f}x real time"
        )
    print(f"ratio scan/naive: {best['naive'] / best['scan']:.2f}x")


if __name__ == "__main__":
    main()
