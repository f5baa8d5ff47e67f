"""The out-of-fold threshold of an ensemble run, and how far it can be trusted.

Every training weld gets one score from the member that was trained with the weld's config
folder held out (`training.ensemble`). The threshold is tuned on those pooled scores with the
training grid's criterion (`training.metrics.tune_threshold`: best macro-F1 over the
threshold grid, the middle of ties), so it rests on every training weld instead of the two
validation folders of `val_fraction`. Its false-alarm rate and recall on the same scores come
with Wilson 95 % intervals, its ROC-AUC with a bootstrap interval over config folders.

The uncertain band is the range of scores the out-of-fold predictions could not call
reliably (`uncertain_band`). The result is the artifact's `calibration` metadata
(`deploy.calibration` documents the keys).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.metrics import folder_bootstrap, roc_auc, tune_threshold, wilson_interval

# Least half-width of the uncertain band around the threshold: one step of the threshold grid
# (0.05), the resolution the threshold itself was chosen at.
BAND_MARGIN = 0.05


@dataclass(frozen=True)
class OofScore:
    """One training weld's out-of-fold score and who gave it."""

    config_folder: str
    weld: str
    label: int  # 0 good, 1 defect
    score: float  # pooled p_defect (eval_pool_ratio), as the daemon judges the weld
    member: int  # the member that never saw this weld's folder


def _finite(v: float) -> float | None:
    """JSON-safe: None for NaN (an undefined figure), never a NaN in the metadata."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def uncertain_band(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    margin: float = BAND_MARGIN,
) -> list[float]:
    """[low, high]: the hull of threshold +- `margin`, every out-of-fold error's score (good
    welds at or above the threshold, defect welds below it) and, when the classes' scores
    overlap, that overlap (lowest defect score to highest good score), clipped to [0, 1]."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(scores, dtype=np.float64)
    good, defect = p[y == 0], p[y == 1]
    low, high = threshold - margin, threshold + margin
    errors = np.concatenate([good[good >= threshold], defect[defect < threshold]])
    if errors.size:
        low, high = min(low, float(errors.min())), max(high, float(errors.max()))
    if good.size and defect.size and defect.min() < good.max():
        low, high = min(low, float(defect.min())), max(high, float(good.max()))
    return [max(0.0, low), min(1.0, high)]


def calibrate(scores: Sequence[OofScore], grid: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """The threshold tuned on the out-of-fold scores, and its figures (the `calibration`
    metadata; keys in `deploy.calibration`)."""
    y = np.array([s.label for s in scores], dtype=int)
    p = np.array([s.score for s in scores], dtype=np.float64)
    threshold, _ = tune_threshold(y, p, grid)
    called = p >= threshold
    n_good, n_defect = int(np.sum(y == 0)), int(np.sum(y == 1))
    false_alarms, hits = int(np.sum(called & (y == 0))), int(np.sum(called & (y == 1)))
    folders = [s.config_folder for s in scores]
    folder_label = {s.config_folder: s.label for s in scores}
    auc = folder_bootstrap(folders, folder_label, lambda i: roc_auc(y[i], p[i]), seed=seed)
    return {
        "method": "out_of_fold",
        "criterion": "macro_f1",
        "threshold": float(threshold),
        "false_alarm_rate": _finite(false_alarms / n_good if n_good else math.nan),
        "false_alarm_interval": [_finite(v) for v in wilson_interval(false_alarms, n_good)],
        "recall": _finite(hits / n_defect if n_defect else math.nan),
        "recall_interval": [_finite(v) for v in wilson_interval(hits, n_defect)],
        "n_good": n_good,
        "n_defect": n_defect,
        "false_alarms": false_alarms,
        "hits": hits,
        "roc_auc": _finite(roc_auc(y, p)),
        "roc_auc_interval": [_finite(auc.low), _finite(auc.high)],
        "band": uncertain_band(y, p, threshold),
    }
