"""Does batching windows from several stations into one forward pass save CPU?

The monitor's inference worker judges whatever windows wait, in one forward pass. With 8
stations their windows arrive at different moments (each weld's windows are aligned at its
own start), so batches are mostly one window live. This measures what holding windows back to
batch them would save: CPU time per window for batches of 1..8 windows, one torch thread (as
the worker runs), with the project's untrained seeded artifact (same architecture as a
trained one).

    .venv/bin/python -m bench.inference_batching
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deploy.loader import load_artifact
from monitor.pipeline.inference import TORCH_THREADS
from tests.support.artifacts import export_untrained

BATCH_SIZES = (1, 2, 4, 8)  # 8: one window from each of 8 stations
PASSES = 40  # forward passes timed per batch size and repeat
WARMUP_PASSES = 5  # TorchScript's profiling executor specialises on the first calls
REPEATS = 3  # the machine is shared: report the spread
WINDOW_RMS = 0.01  # white-noise windows at -40 dBFS (the level does not change the cost)


def per_window_ms(model_dir: Path) -> dict[int, list[float]]:
    """CPU ms per window for each batch size, one figure per repeat."""
    model = load_artifact(export_untrained(model_dir).path)
    rng = np.random.default_rng(0)
    out: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    for _ in range(REPEATS):
        for batch in BATCH_SIZES:
            windows = rng.normal(0.0, WINDOW_RMS, (batch, model.chunk_samples)).astype(np.float32)
            for _ in range(WARMUP_PASSES):
                model.window_probs(windows, batch)
            began = time.process_time()
            for _ in range(PASSES):
                model.window_probs(windows, batch)
            out[batch].append((time.process_time() - began) * 1e3 / (PASSES * batch))
    return out


def main() -> None:
    torch.set_num_threads(TORCH_THREADS)
    print(
        f"# {platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = per_window_ms(Path(tmp))
    print("| windows per pass | CPU ms per window (median; min-max) |")
    print("|---|---|")
    for batch, values in results.items():
        v = sorted(values)
        print(f"| {batch} | {v[len(v) // 2]:.2f} ({v[0]:.2f}-{v[-1]:.2f}) |")


if __name__ == "__main__":
    main()
