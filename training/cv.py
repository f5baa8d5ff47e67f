"""Small-data mode: leave-one-config-folder-out cross-validation.

Each fold trains on every config folder but one and judges the held-out folder's recordings.
With no data to spare, a fold's checkpoint selection and threshold tuning use its own training
folders only (never the held-out one), so the pooled out-of-fold figures are honest, if
noisy: report them with the number of folds and files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.pooling import topk_pool
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.dataset import index_dataset
from training.export import classifier_from_checkpoint
from training.features import FeatureStore
from training.metrics import confusion, roc_auc
from training.prepare import DataError, TrainData, make_store
from training.train import bag_window_probs, train


@dataclass(frozen=True)
class CVResult:
    n_folds: int
    skipped_folds: list[str]
    rows: list[dict[str, Any]]  # one per held-out recording
    metrics: dict[str, float | int]


def pooled_metrics(rows: list[dict[str, Any]], n_folds: int) -> dict[str, float | int]:
    y = [r["y_true"] for r in rows]
    p = [r["p_defect"] for r in rows]
    cm = confusion(y, [r["label"] for r in rows])
    return {
        "FOLDS": n_folds,
        "FILES": len(rows),
        "ROC_AUC": roc_auc(y, p),
        "F1_DEFECT": cm.f1,
        "MACRO_F1": cm.macro_f1,
        "PRECISION_DEFECT": cm.precision,
        "RECALL_DEFECT": cm.recall,
        "ACCURACY": cm.accuracy,
        "TP": cm.tp,
        "FP": cm.fp,
        "TN": cm.tn,
        "FN": cm.fn,
    }


def cross_validate(
    cfg: TrainConfig,
    out_dir: Path,
    *,
    store: FeatureStore | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> CVResult:
    """Run every fold into `out_dir/fold_XX_<folder>`; write `oof.csv` and `cv_summary.json`."""
    if not cfg.data_root:
        raise DataError("no data_root: set it in the config or pass --data-root")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = index_dataset(
        Path(cfg.data_root), sample_rate=cfg.sample_rate, chunk_samples=cfg.chunk_samples
    )
    store = store or make_store(cfg)
    bags = store.bags(index.entries, index.report)  # each file decoded once for all folds
    index.report.write(out_dir)
    folders = sorted({b.entry.config_folder for b in bags})
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for i, folder in enumerate(folders):
        held_out = [b for b in bags if b.entry.config_folder == folder]
        train_bags = [b for b in bags if b.entry.config_folder != folder]
        if {b.label for b in train_bags} != {0, 1}:
            skipped.append(folder)
            log(f"fold {i + 1}/{len(folders)} {folder}: skipped (training side lacks a class)")
            continue
        log(f"fold {i + 1}/{len(folders)}: holding out {folder} ({len(held_out)} recordings)")
        data = TrainData(train_bags, train_bags, None, index.report)
        result = train(
            cfg, out_dir / f"fold_{i + 1:02d}_{folder}", data=data, progress=progress, log=log
        )
        ckpt = load_checkpoint(result.best_checkpoint)
        backbone = classifier_from_checkpoint(ckpt).backbone
        threshold = float(ckpt["threshold"])
        for bag, probs in zip(held_out, bag_window_probs(backbone, held_out), strict=True):
            p = float(topk_pool(probs, cfg.eval_pool_ratio))
            rows.append(
                {
                    "fold": i + 1,
                    "config_folder": folder,
                    "run_id": bag.entry.run_id,
                    "label_code": bag.entry.label_code,
                    "y_true": bag.label,
                    "p_defect": p,
                    "threshold": threshold,
                    "label": int(p >= threshold),
                }
            )
    n_folds = len(folders) - len(skipped)
    metrics = pooled_metrics(rows, n_folds) if rows else {"FOLDS": 0, "FILES": 0}
    if rows:
        with (out_dir / "oof.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    summary = {"metrics": metrics, "skipped_folds": skipped, "config": cfg.model_dump()}
    (out_dir / "cv_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return CVResult(n_folds, skipped, rows, metrics)
