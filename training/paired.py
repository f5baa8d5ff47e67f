"""Two artifacts on the same files: is their difference more than chance?

`weldmon evaluate --model A --compare B` judges the same rows (whole files, or the welds the
same segmenter cut) with both artifacts and pairs them by (file, weld). Two tests, each on the
pairs both artifacts judged:

- **McNemar's exact test** on the decisions: of the rows where exactly one artifact is
  right, is the split between "only A right" and "only B right" more uneven than a fair coin
  would make it? Two-sided exact binomial p-value (no chi-square approximation: the counts
  at a cell are small).
- **The ROC-AUC difference** (B minus A) with a percentile bootstrap interval in which whole
  config folders are resampled, stratified by class (`training.metrics.folder_bootstrap`):
  a folder is one recording session, so its rows are not independent. The difference is
  more than chance at the interval's level when the interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from training.evaluate import FileResult
from training.metrics import BOOTSTRAP_LEVEL, BOOTSTRAP_RESAMPLES, folder_bootstrap, roc_auc

SIGNIFICANCE = 0.05  # the p-value below which McNemar's difference is called more than chance


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (rows only A got right,
    rows only B got right): 2 x the binomial(n, 1/2) tail of the smaller count, at most 1."""
    if only_a < 0 or only_b < 0:
        raise ValueError("counts must be >= 0")
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class PairedComparison:
    """A (``model``) against B (``compare``) on the rows both judged."""

    pairs: int  # rows both artifacts judged
    both_right: int
    only_a_right: int
    only_b_right: int
    both_wrong: int
    mcnemar_p: float
    accuracy_a: float
    accuracy_b: float
    roc_auc_a: float
    roc_auc_b: float
    roc_auc_diff: float  # B - A
    roc_auc_diff_low: float  # the bootstrap interval of B - A
    roc_auc_diff_high: float
    bootstrap_resamples: int  # resamples where both AUCs were defined
    level: float
    decisions_differ: bool  # McNemar p < SIGNIFICANCE
    ranking_differs: bool  # the AUC interval excludes 0

    def as_dict(self) -> dict[str, Any]:
        """The figures by name (the report's paired.json)."""
        return asdict(self)

    def lines(self, prefix: str = "") -> list[str]:
        """`KEY=value` lines for the terminal."""
        return [f"{prefix}PAIRED_{k.upper()}={_text(v)}" for k, v in asdict(self).items()]


def _text(value: object) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _key(row: FileResult) -> tuple[str, int]:
    return row.path, row.weld


def paired_comparison(
    rows_a: Sequence[FileResult],
    rows_b: Sequence[FileResult],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
) -> PairedComparison:
    """Pair A's and B's judged rows by (file, weld) and compare them (module docstring).
    ValueError when no row was judged by both."""
    judged_b = {_key(r): r for r in rows_b if r.judged}
    pairs = [(a, judged_b[_key(a)]) for a in rows_a if a.judged and _key(a) in judged_b]
    if not pairs:
        raise ValueError("no file or weld was judged by both artifacts: nothing to compare")
    y = np.array([a.y_true for a, _ in pairs], dtype=int)
    right_a = np.array([a.label == a.y_true for a, _ in pairs])
    right_b = np.array([b.label == b.y_true for _, b in pairs])
    p_a = np.array([a.p_defect for a, _ in pairs], dtype=np.float64)
    p_b = np.array([b.p_defect for _, b in pairs], dtype=np.float64)
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    mcnemar = mcnemar_exact(only_a, only_b)

    def auc_diff(rows: np.ndarray) -> float:
        return roc_auc(y[rows], p_b[rows]) - roc_auc(y[rows], p_a[rows])

    folders = [a.config_folder for a, _ in pairs]
    folder_class = {a.config_folder: a.y_true for a, _ in pairs}
    interval = folder_bootstrap(
        folders, folder_class, auc_diff, resamples=resamples, level=level, seed=seed
    )
    auc_a, auc_b = roc_auc(y, p_a), roc_auc(y, p_b)
    return PairedComparison(
        pairs=len(pairs),
        both_right=int(np.sum(right_a & right_b)),
        only_a_right=only_a,
        only_b_right=only_b,
        both_wrong=int(np.sum(~right_a & ~right_b)),
        mcnemar_p=mcnemar,
        accuracy_a=float(right_a.mean()),
        accuracy_b=float(right_b.mean()),
        roc_auc_a=auc_a,
        roc_auc_b=auc_b,
        roc_auc_diff=auc_b - auc_a,
        roc_auc_diff_low=interval.low,
        roc_auc_diff_high=interval.high,
        bootstrap_resamples=interval.valid,
        level=level,
        decisions_differ=mcnemar < SIGNIFICANCE,
        ranking_differs=bool(interval.valid) and not interval.low <= 0.0 <= interval.high,
    )
