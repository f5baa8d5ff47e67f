"""Evaluate any deploy artifact on a labelled dataset, in two modes.

- **file mode**: each file is decoded with `deploy.audio.read_recording` and judged whole
  with `DeployModel.predict`, the code path of `weldmon predict`, on the same backend choice
  (`deploy.loader`: by default ONNX Runtime when the artifact is a `.onnx` or has its ONNX
  twin beside it, TorchScript otherwise), so per-file p_defect is identical to it;
- **weld mode**: what the daemon judges. The file's welds are found (`training.welds`: the
  sensor CSV's arc current when present, else the daemon's default segmenter; or a mode
  asked for), and each weld's audio [start, end) is judged like `predict` judges a file:
  whole windows aligned at the weld start, the artifact's pooling and threshold. That is
  what `weldmon replay` publishes for the same welds (tested to 1e-5 on the real
  recordings). A weld shorter than one window is reported as the daemon reports it
  (`too_short`, p_defect 0) and left out of the figures.

A file is decoded once for both modes, and its bags (the whole file, each weld) are judged
from one batched pass over all their windows (`DeployModel.judge_bags`: each bag pooled on its
own windows, bitwise `predict`'s). Throughput comes from running `workers` files at once: each
worker thread borrows a loaded artifact of its own (a `DeployModel` is not thread-safe; the
caller's checked copy is the first) and decodes its next file while the others infer, with one
intra-op thread each, because two small CNN passes side by side use two cores better than one
pass split across both (both runtimes release the GIL while they compute). torch is not
imported unless the artifact runs on TorchScript. Files that cannot be judged become error
rows; the run goes on.
"""

from __future__ import annotations

import os
import queue
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.audio import read_recording
from deploy.errors import AudioError
from deploy.loader import Backend, DeployModel, Verdict, load_artifact
from deploy.windows import mix_channels, window_count
from training.dataset import GOOD_CODE, LABEL_CODES, RunEntry, index_dataset
from training.metrics import confusion, expected_calibration_error, pr_auc, roc_auc
from training.split import read_split
from training.welds import SegmentationSource, WeldSegmentationError, find_welds

WORKER_THREADS = 1  # intra-op threads per worker: the workers themselves fill the cores
PREFETCH_PER_WORKER = 2  # files queued per worker: keeps workers busy, bounds decoded memory
MODES = ("both", "file", "weld")
TOO_SHORT = "too_short"  # a weld without one whole window: the daemon's flag, p_defect 0
NO_WELD = "no_weld"  # weld mode found no weld in the file


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (a container's cpuset or `taskset`
    narrows it below os.cpu_count()), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


DEFAULT_WORKERS = max(1, min(4, usable_cores()))  # one file in flight per usable core


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
    # weld mode only: which weld of the file, where (s from the file's start), cut by whom
    weld: int = -1  # -1: the whole file (file mode)
    start_s: float = 0.0
    end_s: float = 0.0
    segmentation: str = "file"
    flag: str = ""  # too_short / no_weld: reported, not judged, left out of the figures

    @property
    def judged(self) -> bool:
        return not self.error and not self.flag

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
            "weld": self.weld,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "segmentation": self.segmentation,
            "flag": self.flag,
            "error": self.error,
        }


@dataclass
class EvaluationResult:
    model: dict[str, Any]  # DeployModel.describe()
    files: list[FileResult]  # file mode (empty when only weld mode ran)
    metrics: dict[str, float | int]
    welds: list[FileResult] = field(default_factory=list)  # weld mode, one row per weld
    weld_metrics: dict[str, float | int] = field(default_factory=dict)
    segmentation: str = "auto"
    metadata: dict[str, Any] = field(default_factory=dict)  # the artifact's (provenance)
    data_root: str = ""
    split_file: str | None = None

    @property
    def judged(self) -> list[FileResult]:
        return [f for f in self.files if f.judged]

    @property
    def errors(self) -> list[FileResult]:
        return [f for f in self.files if f.error]

    @property
    def judged_welds(self) -> list[FileResult]:
        return [w for w in self.welds if w.judged]


def compute_metrics(
    files: list[FileResult], threshold: float, total_key: str = "TOTAL_FILES"
) -> dict[str, float | int]:
    """The evaluation keys, in print order, over the judged rows (labels from the artifact)."""
    ok = [f for f in files if f.judged]
    y = np.array([f.y_true for f in ok], dtype=int)
    p = np.array([f.p_defect for f in ok], dtype=np.float64)
    pred = np.array([f.label for f in ok], dtype=int)
    cm = confusion(y, pred)
    metrics: dict[str, float | int] = {
        total_key: cm.total,
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
    metrics["ERROR_FILES"] = len({f.path for f in files if f.error})
    if total_key != "TOTAL_FILES":
        metrics["TOO_SHORT_WELDS"] = sum(f.flag == TOO_SHORT for f in files)
        metrics["FILES_WITHOUT_WELD"] = sum(f.flag == NO_WELD for f in files)
    metrics["THRESHOLD"] = threshold
    return metrics


def format_metrics(metrics: dict[str, float | int], prefix: str = "") -> list[str]:
    """`KEY=value` lines: counts as integers, rates with 6 decimals (the original's format)."""
    return [
        f"{prefix}{k}={v}" if isinstance(v, int) else f"{prefix}{k}={v:.6f}"
        for k, v in metrics.items()
    ]


def _row(entry: RunEntry, **fields: Any) -> FileResult:
    return FileResult(
        entry.run_id,
        str(entry.path),
        entry.config_folder,
        entry.label_code,
        entry.binary_label,
        **fields,
    )


def _fill(result: FileResult, verdict: Verdict) -> FileResult:
    result.p_defect = verdict.p_defect
    result.label = verdict.label
    result.n_windows = verdict.n_windows
    result.window_probs = verdict.window_probs
    return result


@dataclass(frozen=True)
class Judged:
    """One file's verdicts: the whole file (file mode) and each of its welds (weld mode)."""

    file: FileResult | None
    welds: list[FileResult]


def _weld_rows(
    model: DeployModel, entry: RunEntry, mono: np.ndarray, segmentation: SegmentationSource
) -> tuple[list[FileResult], list[tuple[FileResult, np.ndarray]]]:
    """The file's weld rows, and (row, windows) of each weld to judge (too-short welds and
    files without a weld are rows with their flag, never judged)."""
    rate, chunk = model.sample_rate, model.chunk_samples
    try:
        welds = find_welds(entry.path, mono, rate, segmentation)
    except WeldSegmentationError as exc:
        return [_row(entry, error=str(exc), segmentation=segmentation)], []
    if not welds:
        return [_row(entry, flag=NO_WELD, segmentation=segmentation)], []
    rows, bags = [], []
    for i, w in enumerate(welds):
        row = _row(entry, weld=i, start_s=w.start / rate, end_s=w.end / rate, segmentation=w.source)
        if window_count(w.n_samples, chunk) < 1:
            row.flag, row.p_defect, row.label = TOO_SHORT, 0.0, 0  # what the daemon publishes
        else:
            bags.append((row, model.bag_windows(mono[w.start : w.end])))
        rows.append(row)
    return rows, bags


def _judge(
    model: DeployModel,
    entry: RunEntry,
    mode: str = "file",
    segmentation: SegmentationSource = "auto",
) -> Judged:
    """One file: decoded once, its bags (the whole file, its welds) judged in one batched
    pass; each bag's verdict is `DeployModel.predict`'s on the same audio."""
    try:
        rec = read_recording(entry.path, model.sample_rate)
    except AudioError as exc:
        failed = _row(entry, error=str(exc))
        return Judged(failed if mode != "weld" else None, [] if mode == "file" else [failed])
    mono = mix_channels(rec.samples)
    bags: list[tuple[FileResult, np.ndarray]] = []
    whole = None
    if mode in ("both", "file"):
        try:
            whole = _row(entry)
            bags.append((whole, model.bag_windows(mono)))
        except AudioError as exc:
            whole = _row(entry, error=str(exc))
    welds: list[FileResult] = []
    if mode in ("both", "weld"):
        welds, weld_bags = _weld_rows(model, entry, mono, segmentation)
        bags.extend(weld_bags)
    verdicts = model.judge_bags([windows for _, windows in bags])
    for (row, _), verdict in zip(bags, verdicts, strict=True):
        _fill(row, verdict)
    return Judged(whole, welds)


class _ModelPool:
    """Loaded copies of one artifact, lent to one worker at a time (a `DeployModel` is not
    thread-safe): the caller's already checked copy first, then one more per worker that
    finds none idle, so at most `workers` exist and none is loaded that no worker needs."""

    def __init__(self, first: DeployModel, model_path: Path, backend: Backend) -> None:
        self._idle: queue.SimpleQueue[DeployModel] = queue.SimpleQueue()
        self._idle.put(first)
        self._path, self._sha, self._backend = model_path, first.sha256, backend

    def judge(self, entry: RunEntry, mode: str, segmentation: SegmentationSource) -> Judged:
        try:
            model = self._idle.get_nowait()
        except queue.Empty:
            model = load_artifact(
                self._path, expected_sha256=self._sha, backend=self._backend, threads=WORKER_THREADS
            )
        try:
            return _judge(model, entry, mode, segmentation)
        finally:
            self._idle.put(model)


def judge_files(
    model_path: Path,
    entries: list[RunEntry],
    *,
    workers: int = DEFAULT_WORKERS,
    backend: Backend = "auto",
    mode: str = "file",
    segmentation: SegmentationSource = "auto",
    model: DeployModel | None = None,
) -> Iterator[Judged]:
    """Verdicts for `entries`, in order, `workers` files in flight at once. `model`: the
    artifact at `model_path` already loaded (with `threads=WORKER_THREADS`), used by the
    first worker instead of loading it again."""
    # Fail fast, in the caller's thread, on a bad artifact; the workers load the same file.
    loaded = model or load_artifact(model_path, backend=backend, threads=WORKER_THREADS)
    if workers <= 1:
        for entry in entries:
            yield _judge(loaded, entry, mode, segmentation)
        return
    models = _ModelPool(loaded, model_path, backend)
    torch = sys.modules.get("torch")  # loaded only for TorchScript, whose workers set its pool
    previous = torch.get_num_threads() if torch is not None else None
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evaluate") as pool:
            pending = []
            it = iter(entries)
            for entry in _take(it, workers * PREFETCH_PER_WORKER):
                pending.append(pool.submit(models.judge, entry, mode, segmentation))
            while pending:
                done = pending.pop(0).result()
                for entry in _take(it, 1):
                    pending.append(pool.submit(models.judge, entry, mode, segmentation))
                yield done
    finally:
        torch = sys.modules.get("torch")
        if torch is not None and previous is not None:
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
    mode: str = "file",
    segmentation: SegmentationSource = "auto",
) -> EvaluationResult:
    """Judge every file of the dataset (or of the split's validation side) with the artifact:
    whole files (`mode` file), their welds (weld) or both."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    model = load_artifact(model_path, backend=backend, threads=WORKER_THREADS)
    model.self_test()  # as run, replay, predict and scan: no report from a model giving NaN
    entries, bad = select_entries(
        data_root, split_file, sample_rate=model.sample_rate, chunk_samples=model.chunk_samples
    )
    files = list(bad) if mode != "weld" else []
    welds = list(bad) if mode != "file" else []
    judged: Iterable[Judged] = judge_files(
        model_path,
        entries,
        workers=workers,
        backend=backend,
        mode=mode,
        segmentation=segmentation,
        model=model,
    )
    if progress:
        from tqdm import tqdm

        judged = tqdm(judged, total=len(entries), desc="evaluate", unit="file", leave=False)
    for one in judged:
        if one.file is not None:
            files.append(one.file)
        welds.extend(one.welds)
    return EvaluationResult(
        model.describe(),
        files,
        compute_metrics(files, model.threshold) if mode != "weld" else {},
        welds,
        compute_metrics(welds, model.threshold, "TOTAL_WELDS") if mode != "file" else {},
        segmentation,
        model.metadata,
        str(data_root),
        str(split_file) if split_file is not None else None,
    )
