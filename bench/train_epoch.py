"""Seconds per training epoch on the full-size replica: `weldmon train` in one process against
`torchrun --nproc_per_node 2` (DDP, gloo on CPU), same data, same config, same run.

The replica of `full_dataset_runs.csv` (bench/make_replica.py, links to the shared
recordings) keeps its config folders, so the split is the real one. `--limit N` trains on N
runs spread through the list and extrapolates the epoch to all 1,551 by training bags (an
epoch is one pass over the training bags plus one validation pass, both linear in the bags);
`--limit 0` runs the whole pool. The recipe is the original's (batch of 8 bags, 1 s
windows); each process gets the cores shared out (2 threads alone, 1 per rank for 2 ranks).

    .venv/bin/python -m bench.train_epoch [--limit 120] [--epochs 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from bench.make_replica import audio_root, build_replica
from tests.support.broker import free_port

POOL_RUNS = 1551  # full_dataset_runs.csv


def _epoch_seconds(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as fh:
        return [float(row["seconds"]) for row in csv.DictReader(fh)]


def _train(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=7200)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=120, help="replica runs (0: all 1,551)")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="weldmon-train-epoch-") as tmp:
        root = Path(tmp)
        runs = build_replica(root / "data", audio_root(), limit=args.limit or None)
        base = {
            "data_root": str(root / "data"),
            "epochs": args.epochs,
            "batch_size": 8,
            "patience": 10,
            "feature_cache_dir": str(root / "cache"),
        }
        (root / "one.yaml").write_text(yaml.safe_dump({**base, "num_threads": cores}))
        (root / "two.yaml").write_text(yaml.safe_dump({**base, "num_threads": max(1, cores // 2)}))
        train = ["-m", "weldmon.cli", "train", "--no-progress"]
        load = os.getloadavg()[0]
        one_cmd = [sys.executable, *train, "--config", str(root / "one.yaml")]
        wall_one = _train([*one_cmd, "--run-dir", str(root / "one")], root)
        wall_two = _train(
            [
                sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                *train, "--config", str(root / "two.yaml"), "--run-dir", str(root / "two"),
            ],
            root,
        )  # fmt: skip
        one, two = _epoch_seconds(root / "one"), _epoch_seconds(root / "two")
        n_found = json.loads((root / "one" / "data_report.json").read_text())["n_found"]
    scale = POOL_RUNS / len(runs)
    print(
        f"# {platform.node()} {platform.machine()} {cores} cpus, torch {torch.__version__}, "
        f"load {load:.1f} at start, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(f"replica runs: {len(runs)} of {POOL_RUNS} ({n_found} found), epochs {args.epochs}")
    for name, secs, wall in (("1 process", one, wall_one), ("2 ranks (gloo)", two, wall_two)):
        best = min(secs)
        print(
            f"{name}: epoch {best:.1f} s (train + validation), wall {wall:.0f} s with data "
            f"prep; full pool ~{best * scale / 60:.1f} min per epoch"
        )


if __name__ == "__main__":
    main()
