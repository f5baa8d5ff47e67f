"""The enrollment figure: leave-one-good-folder-out, pooled with every defect weld.

For each good config folder in turn: enroll the good welds of every other good folder
(`training.enroll`, calibrated for the requested false-alarm rate on those welds alone),
then score the held-out folder's welds (a new session of good welds: how often would they
raise an alarm?) and every defect weld (never enrolled, in any fold). The folds are pooled:
ROC-AUC, PR-AUC, F1, and the false-alarm rate at the enrolled threshold, with 95 %
intervals resampling whole config folders (`training.cv`).

`compare_scorers` runs the protocol once per good-only scorer (`training.enroll.SCORERS`,
each on its own embedding) on one feature store and tabulates them side by side: ROC-AUC
with its folder-bootstrap interval, false alarms and recall with Wilson intervals. A defect
weld is scored in every fold, so its scorings are not independent: recall's Wilson
interval counts distinct welds (`rate_interval`), never scorings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from deploy.anomaly import spectral_embedding
from deploy.frontend import FrontEndParams
from deploy.pooling import topk_pool
from training.cv import CVResult, summarise
from training.enroll import (
    ANOMALY_THRESHOLD,
    DEFAULT_FALSE_ALARM_RATE,
    DEFAULT_POOL_RATIO,
    DEFAULT_SCORER,
    SCORER_EMBEDDINGS,
    SCORERS,
    EnrollmentError,
    calibrate,
    check_scorer,
    embeddings,
    good_bags,
    loo_groups,
    reference_module,
)
from training.features import FeatureStore
from training.metrics import wilson_interval
from training.welds import SegmentationSource

ENROLL_INTERVAL_KEYS = ("ROC_AUC", "PR_AUC", "F1_DEFECT", "FALSE_ALARM_RATE")


def enrollment_cv(
    data_root: Path,
    out_dir: Path,
    *,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
    segmentation: SegmentationSource = "auto",
    cache_dir: Path | None = None,
    by_folder: bool = True,
    embedding: str | None = None,
    scorer: str = DEFAULT_SCORER,
    store: FeatureStore | None = None,
    log: Callable[[str], None] = print,
) -> CVResult:
    """Run every fold; write `oof.csv` and `cv_summary.json` into `out_dir`. `by_folder`
    False calibrates leaving one weld out instead of one folder (the comparison in the docs).
    `scorer` and `embedding` (default: the scorer's) choose the reference; `store` shares
    decoded features between runs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    embedding = embedding or SCORER_EMBEDDINGS[check_scorer(scorer)]
    store = store or default_store(segmentation, cache_dir)
    good, defect = good_bags(data_root, store)
    folders = sorted({b.entry.config_folder for b in good})
    if len(folders) < 2 or not defect:
        raise EnrollmentError(
            f"{data_root}: the protocol needs two good config folders and a defect weld "
            f"(found {len(folders)} good folder(s), {len(defect)} defect weld(s))"
        )
    rows: list[dict[str, Any]] = []
    for i, held_out in enumerate(folders):
        enrolled = [b for b in good if b.entry.config_folder != held_out]
        embs = embeddings(enrolled, embedding)
        cal = calibrate(
            embs,
            false_alarm_rate=false_alarm_rate,
            threshold=ANOMALY_THRESHOLD,
            ratio=DEFAULT_POOL_RATIO,
            groups=loo_groups(enrolled) if by_folder else None,
            scorer=scorer,
        )
        reference = reference_module(embs, cal, scorer)
        log(
            f"fold {i + 1}/{len(folders)}: enrolled {len(enrolled)} good welds, holding out "
            f"{held_out}; leave-one-out false-alarm rate {cal.loo_false_alarm_rate():.3f}"
        )
        scored = [b for b in good if b.entry.config_folder == held_out] + defect
        with torch.no_grad():
            for bag in scored:
                z = reference(spectral_embedding(bag.features, embedding))
                probs = torch.softmax(torch.stack([torch.zeros_like(z), z], dim=1), dim=1)[:, 1]
                p = float(topk_pool(probs, DEFAULT_POOL_RATIO))
                rows.append(
                    {
                        "fold": i + 1,
                        "held_out_good_folder": held_out,
                        "config_folder": bag.entry.config_folder,
                        "run_id": bag.entry.run_id,
                        "weld": bag.key,
                        "segmentation": bag.weld.source,
                        "label_code": bag.entry.label_code,
                        "y_true": bag.label,
                        "n_windows": bag.n_windows,
                        "p_defect": p,
                        "threshold": ANOMALY_THRESHOLD,
                        "label": int(p >= ANOMALY_THRESHOLD),
                    }
                )
    extra = {
        "false_alarm_rate_requested": false_alarm_rate,
        "segmentation": segmentation,
        "scorer": scorer,
        "embedding": embedding,
        "calibration_leaves_out": "config folder" if by_folder else "weld",
    }
    return summarise(
        rows,
        len(folders),
        [],
        out_dir,
        extra,
        ENROLL_INTERVAL_KEYS,
        "leave-one-good-folder-out enrollment; every defect weld scored in every fold, "
        "never enrolled; threshold calibrated on the enrolled welds only",
    )


def default_store(segmentation: SegmentationSource, cache_dir: Path | None) -> FeatureStore:
    """The feature store enrollment's protocols judge with: the default front end, 1 s
    windows (what `weldmon enroll` without a base builds)."""
    frontend = FrontEndParams()
    return FeatureStore(frontend, frontend.sample_rate, cache_dir, segmentation)


def rate_interval(rate: float, distinct: int) -> tuple[float, float]:
    """Wilson 95 % interval of a rate measured over scorings of `distinct` welds: the rate's
    share of the distinct welds (a weld scored in five folds is one observation, not five)."""
    return wilson_interval(rate * distinct, distinct)  # type: ignore[arg-type]


def rate_cell(hits: int, scorings: int, distinct: int) -> str:
    """'k/n = rate [low, high]' for a table (the interval on the distinct welds)."""
    if scorings == 0:
        return "n/a (none scored)"
    rate = hits / scorings
    low, high = rate_interval(rate, distinct)
    welds = "" if distinct == scorings else f" ({distinct} welds)"
    return f"{hits}/{scorings}{welds} = {rate:.2f} [{low:.2f}, {high:.2f}]"


def _summary_row(name: str, result: CVResult) -> str:
    rows = result.rows
    m = result.metrics
    auc = result.intervals["ROC_AUC"]
    goods = len({r["weld"] for r in rows if r["y_true"] == 0})
    defects = len({r["weld"] for r in rows if r["y_true"] == 1})
    fp, tn, tp, fn = (int(m[k]) for k in ("FP", "TN", "TP", "FN"))
    return (
        f"| {name} | {float(m['ROC_AUC']):.3f} {auc.format()} | {rate_cell(fp, fp + tn, goods)} "
        f"| {rate_cell(tp, tp + fn, defects)} |"
    )


def compare_scorers(
    data_root: Path,
    out_dir: Path,
    *,
    scorers: Sequence[str] = SCORERS,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
    segmentation: SegmentationSource = "auto",
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, CVResult], list[str]]:
    """`enrollment_cv` once per scorer (into `out_dir/<scorer>`, one decode for all), and the
    comparison table's lines."""
    store = default_store(segmentation, cache_dir)
    results = {
        s: enrollment_cv(
            data_root,
            Path(out_dir) / s,
            false_alarm_rate=false_alarm_rate,
            segmentation=segmentation,
            scorer=s,
            store=store,
            log=log,
        )
        for s in scorers
    }
    lines = [
        "| scorer (embedding) | ROC-AUC [folder bootstrap 95 %] | false alarms [Wilson 95 %] "
        "| recall [Wilson 95 % on distinct welds] |",
        "|---|---|---|---|",
    ]
    lines += [_summary_row(f"{s} ({SCORER_EMBEDDINGS[s]})", r) for s, r in results.items()]
    return results, lines
