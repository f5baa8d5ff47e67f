"""CPU per window of the model under each backend, and whether batching saves any.

The monitor's inference worker judges whatever windows wait, in one forward pass. With 8
stations their windows arrive at different moments (each weld's windows are aligned at its
own start), so batches are mostly one window live. This measures CPU time per window for
batches of 1..8 windows, with the worker's thread count (`inference.threads`, 1), for the
TorchScript `.pt` and its ONNX twin under ONNX Runtime, on the project's untrained seeded
artifact (same architecture as a trained one). Backends and batch sizes alternate within
each repeat so that a change in the shared machine's load hits them alike.

    .venv/bin/python -m bench.inference_batching
    .venv/bin/python -m bench.inference_batching --ensemble 5   # + 5 width-8 members, averaged
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from deploy.loader import load_artifact
from monitor.config import DEFAULT_INFERENCE_THREADS
from tests.support.artifacts import export_untrained, export_untrained_ensemble

BACKENDS = ("torchscript", "onnx")
BATCH_SIZES = (1, 2, 4, 8)  # 8: one window from each of 8 stations
PASSES = 40  # forward passes timed per batch size and repeat
WARMUP_PASSES = 5  # TorchScript's profiling executor specialises on the first calls
REPEATS = 3  # the machine is shared: report the spread
WINDOW_RMS = 0.01  # white-noise windows at -40 dBFS (the level does not change the cost)


def per_window_ms(model_dir: Path, ensemble: int = 0) -> dict[tuple[str, int], list[float]]:
    """CPU ms per window for each backend and batch size, one figure per repeat. With
    `ensemble` K, also an ensemble of K width-8 members (backends "<backend>+ensemble"),
    alternated with the single width-32 model in the same repeats."""
    path = export_untrained(model_dir, onnx=True).path
    models = {
        b: load_artifact(path, backend=b, threads=DEFAULT_INFERENCE_THREADS) for b in BACKENDS
    }
    if ensemble:
        folder = model_dir / "ensemble"
        folder.mkdir()
        twin = export_untrained_ensemble(folder, members=ensemble, width=8, onnx=True).path
        for b in BACKENDS:
            models[f"{b}+ensemble"] = load_artifact(
                twin, backend=b, threads=DEFAULT_INFERENCE_THREADS
            )
    rng = np.random.default_rng(0)
    out: dict[tuple[str, int], list[float]] = {(b, n): [] for b in models for n in BATCH_SIZES}
    for _ in range(REPEATS):
        for batch in BATCH_SIZES:
            windows = rng.normal(0.0, WINDOW_RMS, (batch, 16000)).astype(np.float32)
            for backend, model in models.items():
                for _ in range(WARMUP_PASSES):
                    model.window_probs(windows, batch)
                began = time.process_time()
                for _ in range(PASSES):
                    model.window_probs(windows, batch)
                cpu_ms = (time.process_time() - began) * 1e3 / (PASSES * batch)
                out[(backend, batch)].append(cpu_ms)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ensemble",
        type=int,
        default=0,
        metavar="K",
        help="also time an ensemble of K width-8 members against the width-32 model",
    )
    args = parser.parse_args()
    print(
        f"# {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{DEFAULT_INFERENCE_THREADS} intra-op thread(s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = per_window_ms(Path(tmp), args.ensemble)
    names = sorted({b for b, _ in results}, key=lambda b: (b.split("+")[0], "+" in b))
    print("| windows per pass | " + " | ".join(f"{b} CPU ms/window" for b in names) + " |")
    print("|---|" + "---|" * len(names))
    for batch in BATCH_SIZES:
        cells = []
        for backend in names:
            v = sorted(results[(backend, batch)])
            cells.append(f"{v[len(v) // 2]:.2f} ({v[0]:.2f}-{v[-1]:.2f})")
        print(f"| {batch} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
