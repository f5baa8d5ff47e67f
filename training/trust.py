"""What an engineer needs before trusting an evaluation: where it came from, whether the
model has seen these folders, how sure each count is, and whether the model is degenerate.

Pure functions over an `EvaluationResult`'s rows and the artifact's metadata; the report
(`training.report`) prints and plots them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.dataset import LABEL_CODES
from training.evaluate import FileResult
from training.metrics import wilson_interval
from weldmon import __version__

NARROW_BAND = 0.05  # p_defect spread (max - min) under which every verdict is "the same"


def class_counts(rows: Sequence[FileResult]) -> list[dict[str, Any]]:
    """Per label (good_weld and each defect type present): how many, how many called defect,
    how many right, and the rate of right calls with its Wilson interval (specificity for
    good_weld, recall for a defect type)."""
    judged = [r for r in rows if r.judged]
    out = []
    for code in sorted({r.label_code for r in judged}):
        mine = [r for r in judged if r.label_code == code]
        called = sum(r.label == 1 for r in mine)
        right = sum(r.label == r.y_true for r in mine)
        low, high = wilson_interval(right, len(mine))
        out.append(
            {
                "label": LABEL_CODES.get(code, code),
                "n": len(mine),
                "folders": len({r.config_folder for r in mine}),
                "called_defect": called,
                "correct": right,
                "rate": right / len(mine),
                "rate_low": low,
                "rate_high": high,
                "rate_is": "specificity" if code == "00" else "recall",
            }
        )
    return out


def degenerate_flags(rows: Sequence[FileResult]) -> list[str]:
    """Warnings that the model says nothing: one label for everything, or every p_defect in
    a narrow band (a threshold anywhere in it decides everything at once)."""
    judged = [r for r in rows if r.judged]
    flags = []
    if len(judged) >= 2:
        labels = {r.label for r in judged}
        if len(labels) == 1:
            name = "defect" if labels == {1} else "good_weld"
            flags.append(f"degenerate: every one of the {len(judged)} verdicts is {name}")
        p = np.array([r.p_defect for r in judged])
        if float(p.max() - p.min()) < NARROW_BAND:
            flags.append(
                f"degenerate: every p_defect lies in [{p.min():.4f}, {p.max():.4f}] "
                f"(spread under {NARROW_BAND}): the scores do not separate anything"
            )
    return flags


def _training_folders(meta: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(folders trained or enrolled on, folders the checkpoint/threshold were chosen on)."""
    prov = meta.get("provenance", {}) or {}
    split = prov.get("split") or {}
    trained = set(split.get("train_folders", [])) | set(prov.get("enrolled_folders", []))
    selected = set(split.get("val_folders", []))
    return trained, selected


def overlap_warnings(rows: Sequence[FileResult], meta: dict[str, Any]) -> list[str]:
    """Warnings when the evaluated files come from folders the artifact was trained (or
    enrolled) on, or whose folders chose its checkpoint and threshold."""
    if not meta:
        return ["no training provenance in the artifact (the original's format): whether "
                "these files were trained on cannot be checked"]  # fmt: skip
    trained, selected = _training_folders(meta)
    prov = meta.get("provenance", {}) or {}
    if not trained and not selected:
        if prov.get("config") or prov.get("checkpoint"):
            return ["the artifact records no training split: it may have been trained on any "
                    "of these files"]  # fmt: skip
        return []
    out = []
    files = {r.path: r.config_folder for r in rows}
    in_train = sorted({f for f in files.values() if f in trained})
    if in_train:
        n = sum(1 for f in files.values() if f in trained)
        out.append(
            f"OVERLAP: {n} of {len(files)} evaluated files are from {len(in_train)} config "
            f"folder(s) the artifact was trained or enrolled on ({', '.join(in_train)}): "
            "their figures are in-sample, not what a new cell would see"
        )
    in_val = sorted({f for f in files.values() if f in selected})
    if in_val:
        n = sum(1 for f in files.values() if f in selected)
        out.append(
            f"TUNED-ON: {n} of {len(files)} evaluated files are from {len(in_val)} config "
            f"folder(s) that chose the artifact's checkpoint and threshold "
            f"({', '.join(in_val)}): optimistic figures"
        )
    return out


def provenance(
    data_root: Path,
    split_file: Path | None,
    model: dict[str, Any],
    meta: dict[str, Any],
    mode: str,
    segmentation: str,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Where the evaluation came from: data, split, when, how, which weldmon and artifact."""
    prov = meta.get("provenance", {}) or {}
    trained, selected = _training_folders(meta)
    return {
        "data_root": str(Path(data_root).resolve()),
        "split": str(Path(split_file).resolve()) if split_file else "none (every file)",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(command if command is not None else ["weldmon", *sys.argv[1:]]),
        "weldmon_version": __version__,
        "mode": mode,
        "segmentation": segmentation,
        "artifact": model.get("path"),
        "artifact_sha256": model.get("sha256"),
        "artifact_kind": prov.get("kind", "supervised" if meta else "legacy"),
        "artifact_trained_on": sorted(trained),
        "artifact_selected_on": sorted(selected),
        "artifact_checkpoint": prov.get("checkpoint"),
    }
