"""The teach-in acceptance protocol (issue 19): `weldmon enroll --cv DIR --teach K [K ...]`.

What a new cell sees: a model that never heard it, taught with K of its good welds. For each
good config folder F (the cell) and each K:

- teach sets: K consecutive welds of F, starting at each of its welds in turn (cyclic), so
  every weld is taught once and scored in the others' sets; a folder of exactly K welds
  gives one set and scores none of its own; a folder of fewer is skipped;
- **good-only**, once per scorer (`training.enroll.SCORERS`): the reference is the good
  welds of every other good folder plus the taught ones (the cell taught next to the shared
  goods), calibrated as `weldmon enroll` does (leave-one-folder-out, the taught welds one
  group); it judges F's other welds and every defect weld;
- **supervised + teach-in**: the good folders are dealt round-robin (in name order) into
  `groups[0]` groups and the defect folders into `groups[1]`; for each pair of a good group
  and a defect group a width-8 single model (seeded, the usual `train`) is trained without
  both, so it never heard the cells nor the defects it judges. Its threshold is taught on
  the K welds by the daemon's rule (`deploy.teach_rule`, guards around the model's own
  threshold); it judges F's other welds and its held-out defect group's welds. One group
  per folder (`--teach-groups` with the folder counts) is the cleanest and costs one model
  per good x defect folder: 20 on the shared recordings, over half an hour on a loaded
  2-core machine; the default 3 x 2 trains 6, each on fewer folders (a harder case for the
  supervised model than a real cell's, whose model trained on everything);
- **fused**, once per scorer: that model and the good-only reference together as `weldmon
  enroll --base` fuses them (`deploy.anomaly.FusedScorer`: a window's logit is the larger of
  the two), the reference calibrated against the taught threshold with the model's scores
  as the floor;
- **k-NN on the penultimate layer** (measured here only, no artifact offers it yet): the
  good-only and fused lines again, with the k-NN reference built on each supervised model's
  penultimate layer (`penultimate_embeddings`) instead of band means, one per model.

A good weld is scored in several teach sets (and, supervised, by one model per defect
folder), a defect weld in every teach set: rates are over scorings, their Wilson intervals
over distinct welds (`training.enroll_cv.rate_interval`). Nothing scored was trained on or
taught. The models are the slow part; features are decoded once (`--cache` keeps them
across runs).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.anomaly import spectral_embedding
from deploy.backbone import WindowClassifier
from deploy.pooling import topk_pool_np
from deploy.teach_rule import guards, taught_threshold
from training.checkpoint import DEFECT_IDX, load_checkpoint
from training.config import TrainConfig
from training.dataset import index_dataset
from training.enroll import (
    ANOMALY_THRESHOLD,
    DEFAULT_FALSE_ALARM_RATE,
    SCORER_EMBEDDINGS,
    SCORERS,
    EnrollmentError,
    calibrate,
    check_scorer,
    reference_module,
    supervised_logits,
)
from training.enroll_cv import rate_cell
from training.export import classifier_from_checkpoint
from training.features import Bag
from training.prepare import TrainData, make_store
from training.train import train
from training.welds import SegmentationSource

SUPERVISED = "supervised + teach-in"
PENULTIMATE = "knn, penultimate"  # k-NN on each fold model's penultimate layer (measured only)
ROWS_NAME = "teach_scores.csv"
SUMMARY_NAME = "teach_summary.json"
MODEL_WIDTH = 8  # the cv recipe's width (docs/training.md)
DEFAULT_EPOCHS = 20  # the cv recipe's epochs
DEFAULT_GROUPS = (3, 2)  # good x defect folder groups: 6 models (module docstring)


@dataclass(frozen=True)
class FoldModel:
    """One supervised model trained without a group of good folders and of defect folders."""

    name: str  # its folder under models/
    good_out: frozenset[str]  # the good folders it never saw: the cells it is taught at
    defect_out: frozenset[str]  # the defect folders it never saw: the defects it judges
    threshold: float  # its own (training-side) threshold: the teach rule's guards
    logits: dict[str, np.ndarray]  # weld key -> window logits (defect minus good)
    penultimate: dict[str, np.ndarray]  # weld key -> window embeddings [T, 4 x width]


def teach_sets(welds: Sequence[Bag], k: int) -> list[list[int]]:
    """Indices of the K-weld teach sets of one folder (cyclic blocks; module docstring)."""
    n = len(welds)
    if n < k:
        return []
    if n == k:
        return [list(range(n))]
    return [[(i + j) % n for j in range(k)] for i in range(n)]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _pooled(window_logits: np.ndarray, ratio: float) -> float:
    return topk_pool_np(_sigmoid(window_logits).astype(np.float32), ratio)


def penultimate_embeddings(
    classifier: WindowClassifier, bags: Sequence[Bag]
) -> dict[str, np.ndarray]:
    """Each weld's windows at the CNN's penultimate layer (global average pool, before dropout
    and the last linear layer): weld key -> [T, 4 x width]."""
    trunk = classifier.backbone[:-2]
    with torch.no_grad():
        return {b.key: trunk(classifier.input_norm(b.features)).double().numpy() for b in bags}


def deal(folders: Sequence[str], n: int) -> list[list[str]]:
    """`folders` dealt round-robin into min(n, len) non-empty groups."""
    n = max(1, min(n, len(folders)))
    return [list(folders[i::n]) for i in range(n)]


def _train_fold_models(
    cfg: TrainConfig,
    bags: list[Bag],
    good_groups: list[list[str]],
    defect_groups: list[list[str]],
    report: Any,
    store: Any,
    out_dir: Path,
    log: Callable[[str], None],
) -> list[FoldModel]:
    models = []
    pairs = [(g, d) for g in good_groups for d in defect_groups]
    for n, (g, d) in enumerate(pairs):
        out = {*g, *d}
        kept = [b for b in bags if b.entry.config_folder not in out]
        name = f"{n + 1:02d}"
        run_dir = out_dir / "models" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "held_out.json").write_text(json.dumps({"good": g, "defect": d}) + "\n")
        log(f"model {n + 1}/{len(pairs)}: without {', '.join(sorted(out))} ({len(kept)} welds)")
        data = TrainData(kept, kept, None, report)
        result = train(
            cfg, run_dir, data=data, store=store, progress=False, log=lambda _: None,
            snapshots=False,
        )  # fmt: skip
        ckpt = load_checkpoint(result.best_checkpoint)
        classifier = classifier_from_checkpoint(ckpt)
        if not isinstance(classifier, WindowClassifier):  # ensemble=1 trains a single model
            raise EnrollmentError(f"{run_dir}: not a single model's checkpoint")
        judged = [b for b in bags if b.entry.config_folder in out or b.label == 0]
        logits = supervised_logits(classifier, judged, DEFECT_IDX)
        models.append(
            FoldModel(
                name, frozenset(g), frozenset(d), float(ckpt["threshold"]),
                {b.key: x for b, x in zip(judged, logits, strict=True)},
                penultimate_embeddings(classifier, judged),
            )
        )  # fmt: skip
    return models


def _row(k: int, method: str, folder: str, taught: list[Bag], model: str, bag: Bag,
         p: float, threshold: float) -> dict[str, Any]:  # fmt: skip
    return {
        "K": k,
        "method": method,
        "cell": folder,
        "taught": "+".join(b.key for b in taught),
        "model": model,
        "config_folder": bag.entry.config_folder,
        "weld": bag.key,
        "y_true": bag.label,
        "p_defect": p,
        "threshold": threshold,
        "label": int(p >= threshold),
    }


def methods(scorers: Sequence[str]) -> list[str]:
    """The table's methods, in its order: good-only and fused once per scorer, and k-NN on
    the supervised model's penultimate layer."""
    return [
        *(f"good-only ({s})" for s in scorers),
        f"good-only ({PENULTIMATE})",
        SUPERVISED,
        *(f"fused ({s})" for s in scorers),
        f"fused ({PENULTIMATE})",
    ]


def _score_supervised(
    k: int,
    folder: str,
    taught: list[Bag],
    rest: list[Bag],
    defect: list[Bag],
    models: list[FoldModel],
    false_alarm_rate: float,
    ratio: float,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Rows of the supervised models taught on `taught`, and each model's taught threshold."""
    rows, thresholds = [], {}
    for model in (m for m in models if folder in m.good_out):
        probs = [_sigmoid(model.logits[b.key]).tolist() for b in taught]
        rule = taught_threshold(probs, ratio, false_alarm_rate, *guards(model.threshold))
        thresholds[model.name] = rule.threshold
        for b in [*rest, *(x for x in defect if x.entry.config_folder in model.defect_out)]:
            p = _pooled(model.logits[b.key], ratio)
            rows.append(_row(k, SUPERVISED, folder, taught, model.name, b, p, rule.threshold))
    return rows, thresholds


def _score_good_only(
    k: int,
    folder: str,
    taught: list[Bag],
    rest: list[Bag],
    others: list[Bag],
    defect: list[Bag],
    models: list[FoldModel],
    thresholds: dict[str, float],
    emb: dict[str, np.ndarray],
    scorer: str,
    false_alarm_rate: float,
    ratio: float,
    label: str | None = None,
    only: FoldModel | None = None,
) -> list[dict[str, Any]]:
    """Rows of the good-only reference (shared goods + taught) and of its fusion with each
    supervised model at that model's taught threshold. `only`: one model's embeddings (its
    penultimate layer), judging that model's held-out defects alone; `label` names the
    method (default: the scorer)."""
    label = label or scorer
    mine = [m for m in models if folder in m.good_out] if only is None else [only]
    if only is not None:
        defect = [x for x in defect if x.entry.config_folder in only.defect_out]
    reference = [*others, *taught]
    ref_embs = [emb[b.key] for b in reference]
    groups = [b.entry.config_folder for b in reference]
    cal = calibrate(
        ref_embs, false_alarm_rate=false_alarm_rate, threshold=ANOMALY_THRESHOLD, ratio=ratio,
        groups=groups, scorer=scorer,
    )  # fmt: skip
    module = reference_module(ref_embs, cal, scorer)
    with torch.no_grad():
        dist = {
            b.key: module.distance(torch.from_numpy(emb[b.key]).float()).double().numpy()
            for b in [*rest, *defect]
        }
    rows = []
    for b in [*rest, *defect]:
        p = _pooled((dist[b.key] - cal.centre) / cal.scale, ratio)
        rows.append(_row(k, f"good-only ({label})", folder, taught,
                         only.name if only else "", b, p, ANOMALY_THRESHOLD))  # fmt: skip
    for model in mine:
        threshold = thresholds[model.name]
        fused = calibrate(
            ref_embs, false_alarm_rate=false_alarm_rate, threshold=threshold, ratio=ratio,
            supervised=[model.logits[b.key] for b in reference], groups=groups, scorer=scorer,
        )  # fmt: skip
        for b in [*rest, *(x for x in defect if x.entry.config_folder in model.defect_out)]:
            z = np.maximum(model.logits[b.key], (dist[b.key] - fused.centre) / fused.scale)
            rows.append(_row(k, f"fused ({label})", folder, taught, model.name, b,
                             _pooled(z, ratio), threshold))  # fmt: skip
    return rows


def summary_table(
    rows: list[dict[str, Any]], ks: Sequence[int], scorers: Sequence[str]
) -> list[dict[str, Any]]:
    """Per K and method: false alarms and recall (counts, distinct welds)."""
    out = []
    for k in ks:
        for method in methods(scorers):
            mine = [r for r in rows if r["K"] == k and r["method"] == method]
            good = [r for r in mine if r["y_true"] == 0]
            bad = [r for r in mine if r["y_true"] == 1]
            out.append(
                {
                    "K": k,
                    "method": method,
                    "false_alarms": sum(r["label"] for r in good),
                    "good_scorings": len(good),
                    "good_welds": len({r["weld"] for r in good}),
                    "detected": sum(r["label"] for r in bad),
                    "defect_scorings": len(bad),
                    "defect_welds": len({r["weld"] for r in bad}),
                    "cells": len({r["cell"] for r in mine}),
                }
            )
    return out


def format_table(table: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: K, method, false alarms and recall with Wilson 95 % intervals."""
    lines = [
        "| K | method | false alarms [Wilson 95 %] | recall [Wilson 95 %] |",
        "|---|---|---|---|",
    ]
    for t in table:
        fa = rate_cell(t["false_alarms"], t["good_scorings"], t["good_welds"])
        rec = rate_cell(t["detected"], t["defect_scorings"], t["defect_welds"])
        lines.append(f"| {t['K']} | {t['method']} | {fa} | {rec} |")
    return lines


def teach_protocol(
    data_root: Path,
    out_dir: Path,
    *,
    teach: Sequence[int] = (1, 2),
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
    segmentation: SegmentationSource = "auto",
    cache_dir: Path | None = None,
    scorers: Sequence[str] = SCORERS,
    epochs: int = DEFAULT_EPOCHS,
    groups: tuple[int, int] = DEFAULT_GROUPS,
    seed: int = 42,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run the protocol; write `teach_scores.csv` and `teach_summary.json` into `out_dir`;
    return the summary table (`summary_table`)."""
    if not teach or any(k < 1 for k in teach):
        raise EnrollmentError(f"--teach takes weld counts of 1 or more, got {list(teach)}")
    for scorer in scorers:
        check_scorer(scorer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.model_validate(
        {
            "data_root": str(data_root), "segmentation": segmentation, "ensemble": 1,
            "width": MODEL_WIDTH, "epochs": epochs, "seed": seed,
            "feature_cache_dir": str(cache_dir) if cache_dir else None,
        }
    )  # fmt: skip
    store = make_store(cfg)
    index = index_dataset(Path(data_root), sample_rate=cfg.sample_rate,
                          chunk_samples=cfg.chunk_samples)  # fmt: skip
    bags = store.bags(index.entries, index.report)
    good_folders = sorted({b.entry.config_folder for b in bags if b.label == 0})
    defect_folders = sorted({b.entry.config_folder for b in bags if b.label == 1})
    if len(good_folders) < 2 or len(defect_folders) < 2:
        raise EnrollmentError(
            f"{data_root}: the teach-in protocol needs two good and two defect config folders "
            f"(found {len(good_folders)} and {len(defect_folders)})"
        )
    embs = {
        s: {b.key: spectral_embedding(b.features, SCORER_EMBEDDINGS[s]).double().numpy()
            for b in bags}
        for s in scorers
    }  # fmt: skip
    good_groups, defect_groups = deal(good_folders, groups[0]), deal(defect_folders, groups[1])
    if len(good_groups) < 2 or len(defect_groups) < 2:
        raise EnrollmentError(
            f"--teach-groups: two good and two defect groups at least (each model trains on "
            f"the others), got {len(good_groups)} and {len(defect_groups)}"
        )
    models = _train_fold_models(
        cfg, bags, good_groups, defect_groups, index.report, store, out_dir, log
    )
    defect = [b for b in bags if b.label == 1]
    rows: list[dict[str, Any]] = []
    for k in teach:
        for folder in good_folders:
            mine = [b for b in bags if b.label == 0 and b.entry.config_folder == folder]
            others = [b for b in bags if b.label == 0 and b.entry.config_folder != folder]
            for chosen in teach_sets(mine, k):
                taught = [mine[i] for i in chosen]
                rest = [b for i, b in enumerate(mine) if i not in chosen]
                sup, thresholds = _score_supervised(
                    k, folder, taught, rest, defect, models, false_alarm_rate, cfg.eval_pool_ratio
                )
                rows += sup
                for s in scorers:
                    rows += _score_good_only(
                        k, folder, taught, rest, others, defect, models, thresholds, embs[s], s,
                        false_alarm_rate, cfg.eval_pool_ratio,
                    )  # fmt: skip
                for m in (m for m in models if folder in m.good_out):
                    rows += _score_good_only(
                        k, folder, taught, rest, others, defect, models, thresholds,
                        m.penultimate, "knn", false_alarm_rate, cfg.eval_pool_ratio,
                        label=PENULTIMATE, only=m,
                    )  # fmt: skip
    with (out_dir / ROWS_NAME).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = summary_table(rows, teach, scorers)
    summary = {
        "protocol": "teach-in acceptance (issue 19): per good config folder, K welds taught, "
        "its other welds and every defect weld scored; supervised models trained without the "
        "cell's folder and the judged defect folder; rates over scorings, intervals over "
        "distinct welds",
        "scorers": {s: SCORER_EMBEDDINGS[s] for s in scorers},
        "false_alarm_rate_requested": false_alarm_rate,
        "supervised": {"width": MODEL_WIDTH, "ensemble": 1, "epochs": epochs, "seed": seed},
        "held_out_groups": {"good": good_groups, "defect": defect_groups},
        "models": len(models),
        "table": table,
    }
    (out_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return table
