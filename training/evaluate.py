"""Evaluate any deploy artifact on a labelled dataset, file by file, with `weldmon predict`'s
exact answer per file.

Each file is decoded with `deploy.audio.read_recording` and judged with
`DeployModel.predict`, the code path of `weldmon predict`, on the same backend choice
(`deploy.loader`: by default ONNX Runtime when the artifact is a `.onnx` or has its ONNX twin
beside it, TorchScript otherwise), so per-file p_defect is identical to it. Throughput comes
from running `workers` files at once: each worker thread owns its own loaded artifact (a
`DeployModel` is not thread-safe) and decodes its next file while the others infer, with one
intra-op thread each, because two small CNN passes side by side use two cores better than
one pass split across both (both runtimes release the GIL while they compute). Files that
cannot be judged become error rows; the run goes on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.audio import read_recording
from deploy.errors import AudioError
from deploy.loader import Backend, DeployModel, load_artifact
from training.dataset import GOOD_CODE, LABEL_CODES, RunEntry, index_dataset
from training.metrics import confusion, expected_calibration_error, pr_auc, roc_auc
from training.split import read_split

DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))  # one file in flight per core
WORKER_THREADS = 1  # intra-op threads per worker: the workers themselves fill the cores
PREFETCH_PER_WORKER = 2  # files queued per worker: keeps workers busy, bounds decoded memory


@dataclass
class FileResult:
    """One file's verdict (or its error)."""

    run_id: str
    path: str
    config_folder: str
    label_code: str
    y_true: int  # 0 good_weld, 1 defect
    p_defect: float = float("nan")
    label: int = -1  # predicted; -1 when the file could not be judged
    n_windows: int = 0
    window_probs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    error: str = ""

    @property
    def label_name(self) -> str:
        return LABEL_CODES.get(self.label_code, "unknown")

    def row(self) -> dict[str, Any]:
        """Flat record for the CSV/JSON report (window probabilities only in JSON)."""
        return {
            "run_id": self.run_id,
            "file": self.path,
            "config_folder": self.config_folder,
            "label_code": self.label_code,
            "label_name": self.label_name,
            "y_true": self.y_true,
            "p_defect": None if self.error else self.p_defect,
            "label": None if self.error else self.label,
            "correct": None if self.error else int(self.label == self.y_true),
            "n_windows": self.n_windows,
            "error": self.error,
        }


@dataclass
class EvaluationResult:
    model: dict[str, Any]  # DeployModel.describe()
    files: list[FileResult]
    metrics: dict[str, float | int]

    @property
    def judged(self) -> list[FileResult]:
        return [f for f in self.files if not f.error]

    @property
    def errors(self) -> list[FileResult]:
        return [f for f in self.files if f.error]


def compute_metrics(files: list[FileResult], threshold: float) -> dict[str, float | int]:
    """The evaluation keys, in print order, over the judged files (labels from the artifact)."""
    ok = [f for f in files if not f.error]
    y = np.array([f.y_true for f in ok], dtype=int)
    p = np.array([f.p_defect for f in ok], dtype=np.float64)
    pred = np.array([f.label for f in ok], dtype=int)
    cm = confusion(y, pred)
    metrics: dict[str, float | int] = {
        "TOTAL_FILES": cm.total,
        "TP": cm.tp,
        "FP": cm.fp,
        "TN": cm.tn,
        "FN": cm.fn,
        "ACCURACY": cm.accuracy,
        "PRECISION_DEFECT": cm.precision,
        "RECALL_DEFECT": cm.recall,
        "F1_DEFECT": cm.f1,
        "ROC_AUC": roc_auc(y, p) if len(ok) else float("nan"),
        "PR_AUC": pr_auc(y, p) if len(ok) else float("nan"),
        "ECE": expected_calibration_error(y, p) if len(ok) else float("nan"),
    }
    for code in sorted({f.label_code for f in ok if f.y_true == 1}):
        of_type = [f for f in ok if f.label_code == code]
        caught = sum(f.label == 1 for f in of_type)
        metrics[f"RECALL_{LABEL_CODES[code].upper()}"] = caught / len(of_type)
    metrics["ERROR_FILES"] = len(files) - len(ok)
    metrics["THRESHOLD"] = threshold
    return metrics


def format_metrics(metrics: dict[str, float | int]) -> list[str]:
    """`KEY=value` lines: counts as integers, rates with 6 decimals (the original's format)."""
    return [f"{k}={v}" if isinstance(v, int) else f"{k}={v:.6f}" for k, v in metrics.items()]


def _judge(model: DeployModel, entry: RunEntry) -> FileResult:
    result = FileResult(
        entry.run_id, str(entry.path), entry.config_folder, entry.label_code, entry.binary_label
    )
    try:
        rec = read_recording(entry.path, model.sample_rate)
        verdict = model.predict(rec.samples)
    except AudioError as exc:
        result.error = str(exc)
        return result
    result.p_defect = verdict.p_defect
    result.label = verdict.label
    result.n_windows = verdict.n_windows
    result.window_probs = verdict.window_probs
    return result


def judge_files(
    model_path: Path,
    entries: list[RunEntry],
    *,
    workers: int = DEFAULT_WORKERS,
    backend: Backend = "auto",
) -> Iterator[FileResult]:
    """Verdicts for `entries`, in order, `workers` files in flight at once."""
    local = threading.local()
    # Fail fast, in the caller's thread, on a bad artifact; the workers load the same file.
    loaded = load_artifact(model_path, backend=backend, threads=WORKER_THREADS)
    sha = loaded.sha256

    def work(entry: RunEntry) -> FileResult:
        if not hasattr(local, "model"):
            local.model = load_artifact(
                model_path, expected_sha256=sha, backend=backend, threads=WORKER_THREADS
            )
        return _judge(local.model, entry)

    if workers <= 1:
        for entry in entries:
            yield _judge(loaded, entry)
        return
    previous = torch.get_num_threads()  # a TorchScript worker sets torch's pool size
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evaluate") as pool:
            pending = []
            it = iter(entries)
            for entry in _take(it, workers * PREFETCH_PER_WORKER):
                pending.append(pool.submit(work, entry))
            while pending:
                done = pending.pop(0).result()
                for entry in _take(it, 1):
                    pending.append(pool.submit(work, entry))
                yield done
    finally:
        torch.set_num_threads(previous)


def _take(it: Iterator[RunEntry], n: int) -> Iterable[RunEntry]:
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return


def select_entries(
    data_root: Path, split_file: Path | None, *, sample_rate: int, chunk_samples: int
) -> tuple[list[RunEntry], list[FileResult]]:
    """Usable runs under `data_root` and error rows for the unusable ones (only the split's
    validation folders when a split is given)."""
    index = index_dataset(data_root, sample_rate=sample_rate, chunk_samples=chunk_samples)
    wanted = set(read_split(split_file).val_folders) if split_file is not None else None
    entries = [e for e in index.entries if wanted is None or e.config_folder in wanted]
    errors = [
        FileResult(
            b.run_id,
            b.path,
            b.config_folder,
            b.run_id[-2:],
            int(b.run_id[-2:] != GOOD_CODE),
            error=b.reason,
        )
        for b in index.report.bad
        if wanted is None or b.config_folder in wanted
    ]
    return entries, errors


def evaluate(
    model_path: Path,
    data_root: Path,
    *,
    split_file: Path | None = None,
    workers: int = DEFAULT_WORKERS,
    backend: Backend = "auto",
    progress: bool = False,
) -> EvaluationResult:
    """Judge every file of the dataset (or of the split's validation side) with the artifact."""
    model = load_artifact(model_path, backend=backend)
    model.self_test()  # as run, replay, predict and scan: no report from a model giving NaN
    entries, files = select_entries(
        data_root, split_file, sample_rate=model.sample_rate, chunk_samples=model.chunk_samples
    )
    judged = judge_files(model_path, entries, workers=workers, backend=backend)
    if progress:
        from tqdm import tqdm

        judged = tqdm(judged, total=len(entries), desc="evaluate", unit="file", leave=False)
    files.extend(judged)
    return EvaluationResult(model.describe(), files, compute_metrics(files, model.threshold))
