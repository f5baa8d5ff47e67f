"""Binary classification metrics as small pure numpy functions (defect = positive class).

Hand-written rather than taken from scikit-learn so the training extra stays small; the tests
check them against independently computed values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ECE_BINS = 10  # equal-width probability bins of the reliability diagram (the usual choice)
WILSON_Z = 1.959964  # two-sided 95 % normal quantile


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.total)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """F1 of the defect class."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def f1_good(self) -> float:
        return _ratio(2 * self.tn, 2 * self.tn + self.fn + self.fp)

    @property
    def macro_f1(self) -> float:
        return (self.f1 + self.f1_good) / 2.0


def _ratio(num: int, den: int) -> float:
    """num / den, or 0.0 when the denominator is empty (sklearn's zero_division=0)."""
    return num / den if den else 0.0


def confusion(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> Confusion:
    t = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    return Confusion(
        tp=int(np.sum(t & p)),
        fp=int(np.sum(~t & p)),
        tn=int(np.sum(~t & ~p)),
        fn=int(np.sum(t & ~p)),
    )


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        stop = start
        while stop + 1 < len(x) and sorted_x[stop + 1] == sorted_x[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    return ranks


def roc_auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic; NaN with one class only."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pr_auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the precision-recall curve as average precision (sum of precision at each
    distinct score times the recall gained there); NaN without positives."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order], s[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    # Only the last index of each run of tied scores is a real operating point.
    last = np.r_[np.diff(s_sorted) != 0, True]
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    recall_gain = np.diff(np.r_[0.0, recall])
    return float(np.sum(precision * recall_gain))


def curve_points(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> dict[str, np.ndarray]:
    """ROC (fpr, tpr) and PR (recall, precision) points at every distinct score, for plots."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order], s[order]
    last = np.r_[np.diff(s_sorted) != 0, True] if len(s) else np.zeros(0, dtype=bool)
    tp = np.cumsum(y_sorted)[last]
    fp = np.cumsum(~y_sorted)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return {
        "fpr": np.r_[0.0, fp / n_neg],
        "tpr": np.r_[0.0, tp / n_pos],
        "recall": tp / n_pos,
        "precision": tp / np.maximum(tp + fp, 1),
    }


def reliability(
    y_true: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of p_defect: (count, mean p_defect, observed defect rate).

    Bin i holds p in [i/bins, (i+1)/bins); p = 1.0 goes into the last bin. Empty bins have NaN
    means.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=bins) / count
        rate = np.bincount(idx, weights=y, minlength=bins) / count
    return count, mean_p, rate


def expected_calibration_error(
    y_true: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE of p_defect: sum over bins of (bin share) x |observed defect rate - mean p_defect|."""
    count, mean_p, rate = reliability(y_true, probs, bins)
    total = count.sum()
    if total == 0:
        return float("nan")
    used = count > 0
    return float(np.sum(count[used] / total * np.abs(rate[used] - mean_p[used])))


TIE_TOLERANCE = 1e-12  # macro-F1 differences below this are float noise, not a better threshold


def tune_threshold(
    y_true: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray, grid: Sequence[float]
) -> tuple[float, float]:
    """(threshold, macro-F1) maximising macro-F1 over `grid` (label = p >= threshold).

    When several thresholds tie (common on small validation sets, where a whole range
    separates the classes perfectly), the middle one of them wins: the original took the
    first, the lowest, which leaves no margin on the good side of the decision. Scores
    within 1e-12 count as equal, so float noise does not pick the winner.
    """
    p = np.asarray(probs, dtype=np.float64)
    scores = [(float(t), confusion(y_true, p >= t).macro_f1) for t in grid]
    best_f1 = max(f1 for _, f1 in scores)
    tied = sorted(t for t, f1 in scores if f1 >= best_f1 - TIE_TOLERANCE)
    return tied[(len(tied) - 1) // 2], best_f1


BOOTSTRAP_RESAMPLES = 2000  # resamples per interval: the percentile ends settle to ~0.01
BOOTSTRAP_LEVEL = 0.95  # two-sided coverage of the percentile interval


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval of a statistic, and how many resamples gave a value."""

    low: float
    high: float
    valid: int  # resamples where the statistic was defined (e.g. both classes drawn)

    def format(self) -> str:
        return f"[{self.low:.3f}, {self.high:.3f}]"


def folder_bootstrap(
    groups: Sequence[str],
    group_labels: dict[str, int],
    statistic: Callable[[np.ndarray], float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
) -> Interval:
    """Percentile interval of `statistic(row_indices)` when whole groups are resampled.

    Rows of one config folder are one recording session, so they are not independent: the
    folders are what is resampled (with replacement), each class's folders among themselves
    (stratified), so every resample holds both classes and as many folders of each as the
    data. `groups[i]` is row i's folder, `group_labels` each folder's class.
    """
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    rows_of = {g: np.asarray(r, dtype=np.int64) for g, r in members.items()}
    by_class = [sorted(g for g in rows_of if group_labels[g] == c) for c in (0, 1)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = [
            rows_of[folders[j]]
            for folders in by_class
            if folders
            for j in rng.integers(0, len(folders), len(folders))
        ]
        v = statistic(np.concatenate(drawn))
        if v == v:  # NaN: undefined on this resample
            values.append(v)
    if not values:
        return Interval(float("nan"), float("nan"), 0)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return Interval(float(low), float(high), len(values))


def threshold_curves(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, steps: int = 101
) -> dict[str, np.ndarray]:
    """Precision, recall and false-alarm rate of `label = score >= t` on a grid of t in
    [0, 1] (precision 1.0 where nothing is called defect, by the plot's convention)."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    grid = np.linspace(0.0, 1.0, steps)
    called = s[None, :] >= grid[:, None]
    tp = (called & y).sum(axis=1)
    fp = (called & ~y).sum(axis=1)
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    return {
        "threshold": grid,
        "precision": precision,
        "recall": tp / n_pos,
        "false_alarm": fp / n_neg,
    }


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound for small n and rates near 0 or 1,
    where the normal approximation gives intervals outside [0, 1])."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
