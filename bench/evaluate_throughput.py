"""Benchmark: `weldmon evaluate` against the original's loop, same files, artifact and run.

The original's way: for each file, decode it, call the artifact's `forward`, one file at a
time (torch's default threads), timed in-process (no imports, no report: the loop alone).
Ours, on a `.pt` with its ONNX twin beside it (made with `weldmon convert` in the temp
folder), as a user runs it:

- `weldmon evaluate` itself, default mode (`both`: every file whole, and every weld the
  segmenter cuts), in a subprocess: imports, model checks, judging, report with plots;
- with `--extra`, also: the same with `--no-plots`; `--mode weld` (what the daemon judges,
  without the whole-file pass); the judging alone in-process (`training.evaluate.judge_files`)
  in both modes and in file mode (the original's work); and `--backend torchscript` in file
  mode.

The lines alternate within each of `--rounds` so a change in the shared machine's load hits
all of them; the figure is the same-run ratio (best of the rounds). CPU seconds per file
(user + system of the process and its threads) are printed beside it: they depend far less
on the machine's load than wall time does.

    .venv/bin/python -m bench.evaluate_throughput [--limit 330] [--workers N] [--rounds 2]

The files come from a link replica of `full_dataset_runs.csv` (bench/make_replica.py) in a
temporary folder; `--limit` keeps a spread subset (the rate per file extrapolates to the
1,551 runs, as every file is one of the shared 38 s / 25 s recordings).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import torch

from bench.make_replica import audio_root, build_replica
from deploy.audio import read_recording
from deploy.convert import convert_artifact
from deploy.loader import load_artifact
from training.dataset import index_dataset
from training.evaluate import DEFAULT_WORKERS, judge_files

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT.parent / "shared" / "compat" / "seed_format_deploy_single_label.pt"
WARM_UP_FILES = 10  # forward calls before the original's loop runs at its steady speed


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], None], children: bool = False) -> tuple[float, float]:
    """(wall s, CPU s) of `run`: this process's CPU, or its children's for a subprocess."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    cpu, started = _cpu_s(who), time.perf_counter()
    run()
    return time.perf_counter() - started, _cpu_s(who) - cpu


def original_loop(model_path: Path, entries: list) -> None:
    """Decode + artifact.forward, one file at a time."""
    model = load_artifact(model_path, backend="torchscript")
    for entry in entries:
        model.forward(read_recording(entry.path, model.sample_rate).samples)


def judging(model_path: Path, entries: list, workers: int, backend: str, mode: str) -> None:
    """`weldmon evaluate`'s judging alone, in this process."""
    for result in judge_files(model_path, entries, workers=workers, backend=backend, mode=mode):
        bad = [r for r in (result.file, *result.welds) if r is not None and r.error]
        if bad:
            raise RuntimeError(bad[0].error)


def evaluate_cli(model: Path, data: Path, report: Path, workers: int, *extra: str) -> None:
    """`weldmon evaluate` as a user runs it, in its own process (imports and report count)."""
    command = [sys.executable, "-m", "training", "evaluate", "--model", str(model),
               "--data-root", str(data), "--report", str(report), "--workers", str(workers),
               *extra]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--limit", type=int, default=330, help="replica runs to judge")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--extra",
        action="store_true",
        help="also --no-plots, --mode weld, judging-alone and torchscript lines",
    )
    args = parser.parse_args()
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{env_path}" if env_path else str(REPO_ROOT)
    with tempfile.TemporaryDirectory(prefix="weldmon-replica-") as tmp:
        model = Path(tmp) / "model" / "deploy_single_label.pt"
        model.parent.mkdir()
        shutil.copy(args.model, model)
        convert_artifact(model, model.with_suffix(".onnx"))  # the twin evaluate picks up
        data = Path(tmp) / "data"
        build_replica(data, audio_root(), mode="link", limit=args.limit)
        entries = index_dataset(data).entries
        audio_s = sum(e.duration_s for e in entries)
        report = Path(tmp) / "report"
        w = args.workers
        lines: dict[str, tuple[Callable[[], None], bool]] = {
            "original loop (decode + forward, one file at a time, in-process)": (
                lambda: original_loop(model, entries), False),
            f"weldmon evaluate, default (both modes, ONNX twin, {w} workers, report + plots)": (
                lambda: evaluate_cli(model, data, report, w), True),
        }  # fmt: skip
        if args.extra:
            lines |= {
                "weldmon evaluate, default, --no-plots": (
                    lambda: evaluate_cli(model, data, report, w, "--no-plots"), True),
                "weldmon evaluate --mode weld (report + plots)": (
                    lambda: evaluate_cli(model, data, report, w, "--mode", "weld"), True),
                f"judging alone, both modes (ONNX twin, {w} workers, in-process)": (
                    lambda: judging(model, entries, w, "auto", "both"), False),
                f"judging alone, file mode (ONNX twin, {w} workers, in-process)": (
                    lambda: judging(model, entries, w, "auto", "file"), False),
                f"judging alone, file mode, --backend torchscript ({w} workers)": (
                    lambda: judging(model, entries, w, "torchscript", "file"), False),
            }  # fmt: skip
        # TorchScript's profiling executor runs a process's first scripted forward calls
        # slower (up to ~5x under load, for a few calls; the state outlives the module), so
        # the original's loop is warmed on 10 files and timed at its steady speed, as over
        # the 1,551 runs; a 2-file warm-up could leave that in its timed loop.
        original_loop(model, entries[:WARM_UP_FILES])
        judging(model, entries[:2], w, "auto", "both")
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in lines}
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for name, (run, children) in lines.items():
                times[name].append(timed(run, children))
                loads.append(os.getloadavg()[0])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, load average "
          f"{min(loads):.1f}-{max(loads):.1f} during the run, "
          f"{time.strftime('%F %H:%M')}")  # fmt: skip
    print(f"files: {len(entries)} ({audio_s:.0f} s of audio), model {args.model.name}, "
          f"best of {args.rounds} rounds")  # fmt: skip
    base_wall = min(t for t, _ in times[next(iter(lines))])
    base_cpu = min(c for _, c in times[next(iter(lines))])
    for name, got in times.items():
        wall, cpu = min(t for t, _ in got), min(c for _, c in got)
        print(f"{name}: {audio_s / wall:.0f}x real time, speed-up {base_wall / wall:.2f}x "
              f"(CPU {cpu / len(entries) * 1000:.0f} ms per file, {base_cpu / cpu:.2f}x less "
              f"than the original's)")  # fmt: skip


if __name__ == "__main__":
    main()
