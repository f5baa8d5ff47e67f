"""Benchmark: seconds per training epoch with session augmentation on against off.

On the shared recordings (weld mode: each weld as the daemon cuts it), one `training.train`
run per setting and round, alternating off / on so a change in the machine's load hits both
alike. An epoch's seconds are the loop's own (the `seconds` column of metrics.csv: the
optimiser steps and the validation pass); the first epoch is left out (allocator warm-up).
The augmentation alone (`training.augment.Augmenter.windows` over every training weld once)
is timed separately, so its share of an epoch is visible.

    nice python -m bench.augment_epoch [--width 32] [--epochs 3] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.cv_techniques import AUGMENT_ALL
from training.augment import Augmenter
from training.config import make_config
from training.prepare import make_store, prepare_data
from training.train import train

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO_ROOT.parent / "shared" / "weld-audio"))
    parser.add_argument("--width", type=int, default=32, help="CNN width (32 = the original)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first one dropped)")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    base = {
        "data_root": args.data_root,
        "width": args.width,
        "epochs": args.epochs,
        "patience": args.epochs,
        "num_threads": args.threads,
    }
    settings = {"off": {}, "on": AUGMENT_ALL}
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load before: {_load()}")
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(make_config(base))
        data = prepare_data(make_config(base), Path(tmp) / "prep", store=store, progress=False)
        print(
            f"data: {len(data.train)} training welds ({sum(b.n_windows for b in data.train)} "
            f"windows), {len(data.val)} validation welds"
        )
        augmenter = Augmenter(
            make_config({**base, **AUGMENT_ALL}).augmentation(), store, data.train, 0
        )
        started = time.perf_counter()
        for bag in data.train:
            augmenter.windows(bag)
        alone = time.perf_counter() - started
        epochs: dict[str, list[float]] = {"off": [], "on": []}
        for r in range(args.rounds):
            for name, extra in settings.items():
                cfg = make_config({**base, **extra})
                run = train(cfg, Path(tmp) / f"{name}{r}", data=data, store=store,
                            progress=False, log=lambda _: None, snapshots=False)  # fmt: skip
                epochs[name] += [h["seconds"] for h in run.history[1:]]
    off, on = statistics.median(epochs["off"]), statistics.median(epochs["on"])
    print(f"load after: {_load()}")
    print(f"augmentation alone, every training weld once: {alone:.2f} s")
    print(f"epoch, augmentation off: median {off:.2f} s over {len(epochs['off'])} epochs "
          f"({', '.join(f'{x:.1f}' for x in epochs['off'])})")  # fmt: skip
    print(f"epoch, augmentation on:  median {on:.2f} s over {len(epochs['on'])} epochs "
          f"({', '.join(f'{x:.1f}' for x in epochs['on'])})")  # fmt: skip
    print(f"on / off: {on / off:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
