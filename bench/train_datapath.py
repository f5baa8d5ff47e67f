"""Benchmark: the training data path and seconds per epoch.

1. Data path, on perturbed replica copies (distinct content, so no cache hit flatters us):
   - the original's way: for every 1 s window, decode the whole FLAC file, take the window,
     compute its log-mel map;
   - ours (`training.features.FeatureStore`): decode each file once, log-mel all its windows
     in batches. Later epochs read the maps from memory and decode nothing.
   Both produce the same maps; reported as windows per second and the ratio.
2. Seconds per epoch on the full-size pool: time `--steps` optimiser steps of the real loop
   (8 bags of 38 windows, forward + MIL loss + backward + Adam) and a validation pass, then
   extrapolate to 1,551 runs split 80/20.

    nice .venv/bin/python -m bench.train_datapath [--files 12] [--steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from bench.make_replica import audio_root, build_replica
from deploy.backbone import WindowClassifier
from deploy.frontend import LogMel
from training.config import TrainConfig
from training.dataset import DataReport, index_dataset
from training.features import FeatureStore
from training.train import EVAL_BATCH_WINDOWS, mil_loss, window_probs

POOL_RUNS = 1551  # the original's evaluation pool (full_dataset_runs.csv)
TRAIN_SHARE = 0.8  # the default val_fraction of 0.2
WINDOWS_PER_RUN = 38  # 38 s recordings, 1 s windows


def original_per_window(entries: list, cfg: TrainConfig) -> tuple[int, float]:
    """(windows, seconds) re-decoding the whole file for every window, as the original did."""
    logmel = LogMel(cfg.frontend()).eval()
    chunk = cfg.chunk_samples
    n = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for entry in entries:
            n_windows = sf.info(str(entry.path)).frames // chunk
            for t in range(n_windows):
                samples, _ = sf.read(str(entry.path), dtype="float32", always_2d=True)
                window = torch.from_numpy(samples[t * chunk : (t + 1) * chunk].T.mean(0).copy())
                logmel(window.unsqueeze(0))
                n += 1
    return n, time.perf_counter() - started


def ours_decode_once(entries: list, cfg: TrainConfig) -> tuple[int, float]:
    store = FeatureStore(cfg.frontend(), cfg.chunk_samples)
    started = time.perf_counter()
    bags = store.bags(entries, DataReport(""))
    return sum(b.n_windows for b in bags), time.perf_counter() - started


def epoch_seconds(bags: list, cfg: TrainConfig, steps: int) -> tuple[float, float]:
    """(s per training step of batch_size bags, s per validation window)."""
    torch.manual_seed(cfg.seed)
    backbone = WindowClassifier(cfg.frontend(), cfg.backbone()).backbone
    optimizer = torch.optim.Adam(backbone.parameters(), lr=cfg.lr)
    batch = [bags[i % len(bags)] for i in range(cfg.batch_size)]
    feats = torch.cat([b.features for b in batch])
    backbone.train()
    times = []
    for _ in range(steps + 1):  # the first step warms the allocator; not counted
        started = time.perf_counter()
        probs = list(torch.split(window_probs(backbone, feats), [b.n_windows for b in batch]))
        loss = mil_loss(probs, [b.label for b in batch], cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    backbone.eval()
    val = feats[:EVAL_BATCH_WINDOWS]
    with torch.no_grad():
        window_probs(backbone, val)
        started = time.perf_counter()
        window_probs(backbone, val)
        per_window = (time.perf_counter() - started) / len(val)
    return sum(times[1:]) / steps, per_window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12, help="perturbed replica files")
    parser.add_argument("--original-files", type=int, default=3, help="files for the slow way")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig()
    with tempfile.TemporaryDirectory(prefix="weldmon-replica-") as tmp:
        build_replica(Path(tmp), audio_root(), mode="perturbed", limit=args.files)
        entries = index_dataset(Path(tmp)).entries
        n_orig, t_orig = original_per_window(entries[: args.original_files], cfg)
        n_ours, t_ours = ours_decode_once(entries, cfg)
        store = FeatureStore(cfg.frontend(), cfg.chunk_samples)
        bags = store.bags(entries, DataReport(""))
    step_s, val_window_s = epoch_seconds(bags, cfg, args.steps)
    train_runs = round(POOL_RUNS * TRAIN_SHARE)
    steps = math.ceil(train_runs / cfg.batch_size)
    val_windows = (POOL_RUNS - train_runs) * WINDOWS_PER_RUN
    epoch = steps * step_s + val_windows * val_window_s
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} torch threads, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"original per-window re-decode: {n_orig / t_orig:.0f} windows/s ({n_orig} windows)")
    print(f"decode once + batched log-mel: {n_ours / t_ours:.0f} windows/s ({n_ours} windows)")
    print(f"data path speed-up (first epoch): {(n_ours / t_ours) / (n_orig / t_orig):.1f}x; "
          "later epochs decode nothing")  # fmt: skip
    print(f"training step ({cfg.batch_size} bags x {WINDOWS_PER_RUN} windows): {step_s:.2f} s; "
          f"validation: {val_window_s * 1000:.1f} ms/window")  # fmt: skip
    print(f"extrapolated epoch on {POOL_RUNS} runs ({steps} steps + {val_windows} validation "
          f"windows): {epoch:.0f} s = {epoch / 60:.1f} min")  # fmt: skip


if __name__ == "__main__":
    main()
