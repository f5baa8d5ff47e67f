"""The enrollment figure: leave-one-good-folder-out, pooled with every defect weld.

For each good config folder in turn: enroll the good welds of every other good folder
(`training.enroll`, calibrated for the requested false-alarm rate on those welds alone),
then score the held-out folder's welds (a new session of good welds: how often would they
raise an alarm?) and every defect weld (never enrolled, in any fold). The folds are pooled:
ROC-AUC, PR-AUC, F1, and the false-alarm rate at the enrolled threshold, with 95 %
intervals resampling whole config folders (`training.cv`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deploy.anomaly import spectral_embedding
from deploy.frontend import FrontEndParams
from deploy.pooling import topk_pool
from training.cv import CVResult, summarise
from training.enroll import (
    ANOMALY_THRESHOLD,
    DEFAULT_EMBEDDING,
    DEFAULT_FALSE_ALARM_RATE,
    DEFAULT_POOL_RATIO,
    EnrollmentError,
    calibrate,
    embeddings,
    good_bags,
    loo_groups,
    reference_module,
)
from training.features import FeatureStore
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
    embedding: str = DEFAULT_EMBEDDING,
    log: Callable[[str], None] = print,
) -> CVResult:
    """Run every fold; write `oof.csv` and `cv_summary.json` into `out_dir`. `by_folder`
    False calibrates leaving one weld out instead of one folder (the comparison in the docs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frontend = FrontEndParams()
    store = FeatureStore(frontend, frontend.sample_rate, cache_dir, segmentation)
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
        )
        reference = reference_module(embs, cal)
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
