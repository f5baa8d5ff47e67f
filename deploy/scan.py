"""Batch scan: score many files at many window offsets, write CSV + JSON.

One decode per file and one batched forward per file (all requested windows at once), so a
scan costs about what the model costs. A bad file becomes an error row; the scan goes on.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from deploy.audio import read_recording
from deploy.errors import AudioError, ReportError
from deploy.loader import DeployModel
from deploy.model import Verdict
from deploy.predict import window_start_sample
from deploy.windows import mix_channels, window_count

CSV_NAME = "deploy_window_scan_results.csv"
JSON_NAME = "deploy_window_scan_results.json"
CSV_COLUMNS = [
    "file",
    "mode",
    "window_start_s",
    "label",
    "label_name",
    "p_defect",
    "n_windows",
    "status",
    "error",
]


@dataclass
class ScanReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    files_ok: int = 0
    files_failed: int = 0
    windows: int = 0


def _row(
    path: Path,
    mode: str,
    verdict: Verdict | None,
    *,
    window_start_s: float | None = None,
    error: str = "",
) -> dict[str, Any]:
    """One CSV/JSON row (the columns of CSV_COLUMNS): a judged window or recording, or an
    error (no verdict)."""
    return {
        "file": str(path),
        "mode": mode,
        "window_start_s": window_start_s,
        "label": verdict.label if verdict else None,
        "label_name": verdict.label_name if verdict else None,
        "p_defect": verdict.p_defect if verdict else None,
        "n_windows": verdict.n_windows if verdict else 0,
        "status": "error" if error else "ok",
        "error": error,
    }


def _error_row(path: Path, message: str) -> dict[str, Any]:
    return _row(path, "recording", None, error=message)


def scan_file(
    model: DeployModel, path: Path, offsets_s: Sequence[float] | None
) -> list[dict[str, Any]]:
    """Rows for one file: one per window (every window, or the given offsets) and one for the
    whole recording (mode A). Raises AudioError when the file cannot be judged at all."""
    rec = read_recording(path, model.sample_rate)
    mono = mix_channels(rec.samples)
    chunk = model.chunk_samples
    n_whole = window_count(mono.shape[0], chunk)
    if n_whole < 1:
        raise AudioError(f"{path}: shorter than one window ({rec.duration_s:.3f} s)")
    if offsets_s is None:
        starts = [i * chunk for i in range(n_whole)]
    else:
        starts = [window_start_sample(model, rec, s) for s in offsets_s]
    windows = np.stack([mono[s : s + chunk] for s in starts])
    probs = model.window_probs(windows)
    rows = [
        _row(path, "window", model.judge(np.asarray([p])), window_start_s=s / model.sample_rate)
        for s, p in zip(starts, probs, strict=True)
    ]
    # Mode A reuses the aligned windows when they were all scored; otherwise it scores them.
    aligned = probs if offsets_s is None else None
    whole = model.judge(aligned) if aligned is not None else model.predict(rec.samples)
    rows.append(_row(path, "recording", whole))
    return rows


def scan(
    model: DeployModel,
    files: Iterable[Path],
    offsets_s: Sequence[float] | None = None,
    *,
    progress: bool = True,
) -> ScanReport:
    """Scan every file; unreadable or unjudgeable files become error rows."""
    report = ScanReport()
    files = list(files)
    for path in tqdm(files, desc="scan", unit="file", disable=not progress):
        try:
            rows = scan_file(model, path, offsets_s)
        except AudioError as exc:
            report.rows.append(_error_row(path, str(exc)))
            report.files_failed += 1
            continue
        report.rows.extend(rows)
        report.files_ok += 1
        report.windows += sum(1 for r in rows if r["mode"] == "window")
    return report


def check_out_dir(out_dir: Path) -> None:
    """Make sure the report can be written to `out_dir` (created if missing) before anything
    is scanned; raises ReportError naming the problem."""
    for target in (out_dir, out_dir / CSV_NAME, out_dir / JSON_NAME):
        if target.exists() and (target is out_dir) != target.is_dir():
            kind = "a file" if target is out_dir else "a folder"
            raise ReportError(
                f"--output: {target} is {kind}; the scan writes {CSV_NAME} and "
                f"{JSON_NAME} into a folder"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"--output: cannot create {out_dir} ({exc.strerror or exc})") from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ReportError(f"--output: {out_dir} is not writable")


def write_report(report: ScanReport, model: DeployModel, out_dir: Path) -> tuple[Path, Path]:
    """Write the CSV (one row per window/recording/error) and the JSON (rows + summary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / CSV_NAME, out_dir / JSON_NAME
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(report.rows)
    summary = {
        "model": model.describe(),
        "files_ok": report.files_ok,
        "files_failed": report.files_failed,
        "windows": report.windows,
        "rows": report.rows,
    }
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    return csv_path, json_path
