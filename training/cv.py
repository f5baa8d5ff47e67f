"""The accuracy protocol: leave-one-config-folder-out cross-validation.

A config folder is one recording session, and each is all-good or all-defect, so any figure
from folders a model was trained or tuned on measures the session, not the weld. Each fold
trains on every folder but one and judges the held-out folder's welds (as the daemon cuts
them, `training.features`). A fold's checkpoint selection and its decision threshold come
from its own training folders only, never from the held-out one.

The pooled out-of-fold figures (ROC-AUC, PR-AUC, F1 of the defect class at each fold's own
threshold) come with 95 % bootstrap intervals that resample whole config folders
(`training.metrics.folder_bootstrap`), and a per-folder table shows where the errors are.
This is the figure the docs quote; with 9 folders and 23 recordings it is a small-sample
figure, and the interval says how small.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from deploy.anomaly import FusedScorer
from deploy.backbone import WindowClassifier
from deploy.pooling import topk_pool
from training.checkpoint import DEFECT_IDX, load_checkpoint
from training.config import TrainConfig
from training.dataset import index_dataset
from training.enroll import (
    MIN_GOOD_WELDS,
    calibrate,
    embeddings,
    loo_groups,
    reference_module,
    supervised_logits,
)
from training.ensemble import train_ensemble
from training.export import classifier_from_checkpoint
from training.features import Bag, FeatureStore
from training.metrics import (
    Interval,
    confusion,
    folder_bootstrap,
    pr_auc,
    roc_auc,
    wilson_interval,
)
from training.prepare import DataError, TrainData, make_store
from training.step import map_classifier
from training.train import bag_window_probs, train

OOF_NAME = "oof.csv"
SUMMARY_NAME = "cv_summary.json"
FOLD_NAME = "fold.json"  # per fold: what was held out and what chose its threshold
INTERVAL_KEYS = ("ROC_AUC", "PR_AUC", "F1_DEFECT")  # the figures quoted with an interval


@dataclass(frozen=True)
class CVResult:
    n_folds: int
    skipped_folds: list[str]
    rows: list[dict[str, Any]]  # one per held-out weld
    metrics: dict[str, float | int]
    intervals: dict[str, Interval] = field(default_factory=dict)
    folders: list[dict[str, Any]] = field(default_factory=list)  # the per-folder table
    # ensemble: each fold's out-of-fold threshold and its figures on the fold's training welds
    fold_calibrations: list[dict[str, Any]] = field(default_factory=list)


def pooled_metrics(rows: list[dict[str, Any]], n_folds: int) -> dict[str, float | int]:
    """Figures over every out-of-fold row (labels at each fold's own threshold)."""
    y = [r["y_true"] for r in rows]
    p = [r["p_defect"] for r in rows]
    cm = confusion(y, [r["label"] for r in rows])
    return {
        "FOLDS": n_folds,
        "FOLDERS": len({r["config_folder"] for r in rows}),
        "FILES": len({r["run_id"] for r in rows}),
        "WELDS": len(rows),
        "ROC_AUC": roc_auc(y, p),
        "PR_AUC": pr_auc(y, p),
        "F1_DEFECT": cm.f1,
        "MACRO_F1": cm.macro_f1,
        "PRECISION_DEFECT": cm.precision,
        "RECALL_DEFECT": cm.recall,
        "FALSE_ALARM_RATE": cm.fp / (cm.fp + cm.tn) if cm.fp + cm.tn else float("nan"),
        "ACCURACY": cm.accuracy,
        "TP": cm.tp,
        "FP": cm.fp,
        "TN": cm.tn,
        "FN": cm.fn,
    }


def _statistics(rows: list[dict[str, Any]]) -> dict[str, Callable[[np.ndarray], float]]:
    y = np.array([r["y_true"] for r in rows], dtype=int)
    p = np.array([r["p_defect"] for r in rows], dtype=np.float64)
    pred = np.array([r["label"] for r in rows], dtype=int)
    return {
        "ROC_AUC": lambda i: roc_auc(y[i], p[i]),
        "PR_AUC": lambda i: pr_auc(y[i], p[i]),
        "F1_DEFECT": lambda i: confusion(y[i], pred[i]).f1,
        "FALSE_ALARM_RATE": lambda i: (
            float(np.mean(pred[i][y[i] == 0])) if np.any(y[i] == 0) else float("nan")
        ),
    }


def folder_intervals(
    rows: list[dict[str, Any]], keys: tuple[str, ...] = INTERVAL_KEYS, seed: int = 0
) -> dict[str, Interval]:
    """Bootstrap intervals of `keys`, resampling config folders (stratified by class)."""
    groups = [r["config_folder"] for r in rows]
    labels = {r["config_folder"]: int(r["y_true"]) for r in rows}
    stats = _statistics(rows)
    return {k: folder_bootstrap(groups, labels, stats[k], seed=seed) for k in keys}


def folder_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per held-out folder: class, welds, p_defect range, how many were called defect."""
    table = []
    for folder in sorted({r["config_folder"] for r in rows}):
        mine = [r for r in rows if r["config_folder"] == folder]
        p = np.array([r["p_defect"] for r in mine])
        y = int(mine[0]["y_true"])
        called = sum(int(r["label"]) for r in mine)
        table.append(
            {
                "config_folder": folder,
                "class": "defect" if y else "good",
                "label_codes": ",".join(sorted({r["label_code"] for r in mine})),
                "welds": len(mine),
                "p_min": float(p.min()),
                "p_median": float(np.median(p)),
                "p_max": float(p.max()),
                "called_defect": called,
                "correct": called if y else len(mine) - called,
                "threshold": float(np.median([r["threshold"] for r in mine])),
            }
        )
    return table


def format_result(result: CVResult) -> list[str]:
    """Printable lines: the pooled figures (with intervals) and the per-folder table."""
    lines = []
    m = result.metrics
    # Counts behind the two rates an operator asks about, with a Wilson interval: a folder
    # bootstrap cannot see beyond the events it has (0 false alarms gives [0, 0]).
    counts = {
        "FALSE_ALARM_RATE": (int(m.get("FP", 0)), int(m.get("FP", 0)) + int(m.get("TN", 0))),
        "RECALL_DEFECT": (int(m.get("TP", 0)), int(m.get("TP", 0)) + int(m.get("FN", 0))),
    }
    for key, value in m.items():
        text = f"{key}={value}" if isinstance(value, int) else f"{key}={value:.6f}"
        if key in result.intervals:
            text += f"  95% CI {result.intervals[key].format()} (bootstrap over config folders)"
        if key in counts and counts[key][1]:
            k, n = counts[key]
            distinct = len({r["weld"] for r in result.rows if r["y_true"] == int(key[0] == "R")})
            if distinct == n:
                low, high = wilson_interval(k, n)
                text += f"  {k}/{n} welds, Wilson 95% [{low:.3f}, {high:.3f}]"
            else:  # a weld scored in several folds (enrollment's defects): no independent count
                text += f"  {k}/{n} scorings of {distinct} distinct welds"
        lines.append(text)
    lines.append("")
    lines.append(
        "| held-out folder | class | codes | welds | p_defect min / median / max "
        "| called defect | correct | threshold |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for f in result.folders:
        lines.append(
            f"| {f['config_folder']} | {f['class']} | {f['label_codes']} | {f['welds']} "
            f"| {f['p_min']:.3f} / {f['p_median']:.3f} / {f['p_max']:.3f} "
            f"| {f['called_defect']} | {f['correct']}/{f['welds']} | {f['threshold']:.2f} |"
        )
    if result.fold_calibrations:
        lines += ["", *fold_calibration_table(result.fold_calibrations)]
    return lines


def _pair(interval: list[float | None]) -> str:
    low, high = interval
    return "n/a" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def fold_calibration_table(calibrations: list[dict[str, Any]]) -> list[str]:
    """Per fold: the ensemble's out-of-fold threshold and its figures on the fold's own
    training welds (what that fold's run printed), the uncertain band."""
    lines = [
        "ensemble out-of-fold threshold per fold (on the fold's training welds):",
        "| fold | held-out folder | threshold | false-alarm rate | recall | ROC-AUC | band |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in calibrations:
        far, rec, auc = (c[k] for k in ("false_alarm_rate", "recall", "roc_auc"))
        lines.append(
            f"| {c['fold']} | {c['held_out']} | {c['threshold']:.2f} "
            f"| {'n/a' if far is None else f'{far:.3f}'} {_pair(c['false_alarm_interval'])} "
            f"| {'n/a' if rec is None else f'{rec:.3f}'} {_pair(c['recall_interval'])} "
            f"| {'n/a' if auc is None else f'{auc:.3f}'} {_pair(c['roc_auc_interval'])} "
            f"| {_pair(c['band'])} |"
        )
    return lines


def _json_safe(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def summarise(
    rows: list[dict[str, Any]],
    n_folds: int,
    skipped: list[str],
    out_dir: Path,
    extra: dict[str, Any] | None = None,
    interval_keys: tuple[str, ...] = INTERVAL_KEYS,
    protocol: str = "leave-one-config-folder-out; threshold and checkpoint from training folds",
) -> CVResult:
    """Pooled figures, intervals and the folder table; writes `oof.csv` and the summary."""
    if not rows:
        result = CVResult(n_folds, skipped, rows, {"FOLDS": 0, "FILES": 0})
    else:
        result = CVResult(
            n_folds,
            skipped,
            rows,
            pooled_metrics(rows, n_folds),
            folder_intervals(rows, interval_keys),
            folder_table(rows),
        )
        with (out_dir / OOF_NAME).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    summary = {
        "protocol": protocol,
        "metrics": {k: _json_safe(v) for k, v in result.metrics.items()},
        "intervals_95": {
            k: {"low": _json_safe(i.low), "high": _json_safe(i.high), "valid": i.valid}
            for k, i in result.intervals.items()
        },
        "folders": result.folders,
        "skipped_folds": skipped,
        **(extra or {}),
    }
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return result


def fold_scorer(
    cfg: TrainConfig, ckpt: dict[str, Any], train_bags: list[Bag], log: Callable[[str], None]
) -> nn.Module:
    """What judges a fold's held-out maps: its trained classifier, with (cell_reference)
    the fold's training good welds added as a cell reference, calibrated on them alone."""
    classifier = classifier_from_checkpoint(ckpt)
    if not isinstance(classifier, WindowClassifier):  # an ensemble: no cell reference for it
        if cfg.cell_reference:
            log("no cell reference: cell_reference is for a single model (ensemble: 1)")
        return _MapScorer(classifier)
    if not cfg.cell_reference:
        return map_classifier(classifier)
    goods = [b for b in train_bags if b.label == 0]
    if len(goods) < MIN_GOOD_WELDS:
        log(f"no cell reference: {len(goods)} training good weld(s), {MIN_GOOD_WELDS} needed")
        return map_classifier(classifier)
    embs = embeddings(goods)
    cal = calibrate(
        embs,
        false_alarm_rate=cfg.cell_false_alarm_rate,
        threshold=float(ckpt["threshold"]),
        ratio=cfg.eval_pool_ratio,
        supervised=supervised_logits(classifier, goods, DEFECT_IDX),
        groups=loo_groups(goods),
    )
    log(f"cell reference: {len(goods)} training good welds, loo false alarms "
        f"{cal.loo_false_alarm_rate():.3f}")  # fmt: skip
    fused = FusedScorer(classifier, reference_module(embs, cal), DEFECT_IDX).eval()
    return _MapScorer(fused)


class _MapScorer(nn.Module):
    """Adapts a scorer's `classify_maps` to the map-level call training uses."""

    def __init__(self, scorer: nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, maps: Tensor) -> Tensor:
        # nn.Module types a submodule's attributes as Tensor | Module; every scorer has it.
        return self.scorer.classify_maps(maps)  # type: ignore[operator]


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
    calibrations: list[dict[str, Any]] = []  # an ensemble's out-of-fold threshold, per fold
    for i, folder in enumerate(folders):
        held_out = [b for b in bags if b.entry.config_folder == folder]
        train_bags = [b for b in bags if b.entry.config_folder != folder]
        if {b.label for b in train_bags} != {0, 1}:
            skipped.append(folder)
            log(f"fold {i + 1}/{len(folders)} {folder}: skipped (training side lacks a class)")
            continue
        log(f"fold {i + 1}/{len(folders)}: holding out {folder} ({len(held_out)} welds)")
        # No folder to spare for validation: selection and threshold on the training folders.
        data = TrainData(train_bags, train_bags, None, index.report)
        fold_dir = out_dir / f"fold_{i + 1:02d}_{folder}"
        trained_on = sorted({b.entry.config_folder for b in train_bags})
        fold_dir.mkdir(parents=True, exist_ok=True)
        (fold_dir / FOLD_NAME).write_text(
            json.dumps(
                {
                    "held_out": folder,
                    "trained_on": trained_on,
                    "threshold_and_checkpoint_from": trained_on,
                },
                indent=2,
            )
            + "\n"
        )
        if cfg.ensemble > 1:  # the same path as `weldmon train`: the cv figure is the ensemble's
            result = train_ensemble(
                cfg,
                fold_dir,
                bags=train_bags,
                report=index.report,
                store=store,
                progress=progress,
                log=log,
            )
        else:
            result = train(
                cfg,
                fold_dir,
                data=data,
                store=store,
                progress=progress,
                log=log,
                snapshots=False,
            )
        ckpt = load_checkpoint(result.best_checkpoint)
        threshold = float(ckpt["threshold"])
        if ckpt.get("calibration"):
            calibrations.append({"fold": i + 1, "held_out": folder, **ckpt["calibration"]})
        scorer = fold_scorer(cfg, ckpt, train_bags, log)
        for bag, probs in zip(held_out, bag_window_probs(scorer, held_out), strict=True):
            p = float(topk_pool(probs, cfg.eval_pool_ratio))
            rows.append(
                {
                    "fold": i + 1,
                    "config_folder": folder,
                    "run_id": bag.entry.run_id,
                    "weld": bag.key,
                    "weld_start_s": bag.weld.start / cfg.sample_rate,
                    "weld_end_s": bag.weld.end / cfg.sample_rate,
                    "segmentation": bag.weld.source,
                    "label_code": bag.entry.label_code,
                    "y_true": bag.label,
                    "n_windows": bag.n_windows,
                    "p_defect": p,
                    "threshold": threshold,
                    "label": int(p >= threshold),
                }
            )
    n_folds = len(folders) - len(skipped)
    extra: dict[str, Any] = {"config": cfg.model_dump()}
    if calibrations:
        extra["fold_calibrations"] = calibrations
    summary = summarise(rows, n_folds, skipped, out_dir, extra)
    return replace(summary, fold_calibrations=calibrations)
