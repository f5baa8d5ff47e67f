"""Metrics against independently computed values: hand-worked cases and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from training.metrics import (
    confusion,
    expected_calibration_error,
    pr_auc,
    roc_auc,
    tune_threshold,
)


def _random_case(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    # Rounded so that tied scores occur: ties are where AUC implementations differ.
    p = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1), 2)
    return y, p


def test_confusion_counts_a_hand_worked_case() -> None:
    cm = confusion([1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0, 0])
    assert (cm.tp, cm.fp, cm.tn, cm.fn) == (2, 1, 3, 1)
    assert cm.precision == pytest.approx(2 / 3)
    assert cm.recall == pytest.approx(2 / 3)
    assert cm.f1 == pytest.approx(2 / 3)
    assert cm.f1_good == pytest.approx(3 / 4)
    assert cm.macro_f1 == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert cm.accuracy == pytest.approx(5 / 7)


def test_f1_without_predicted_defects_is_zero_not_nan() -> None:
    assert confusion([1, 0], [0, 0]).f1 == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_and_macro_f1_match_sklearn(seed: int) -> None:
    y, p = _random_case(seed)
    pred = (p >= 0.5).astype(int)
    cm = confusion(y, pred)
    assert cm.f1 == pytest.approx(skm.f1_score(y, pred))
    assert cm.macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro"))


def test_roc_auc_of_a_hand_worked_case_counts_pairs() -> None:
    # positives 0.8, 0.4; negatives 0.5, 0.4, 0.1: pairs won 3 + 0.5 (tie) + 1 = 4.5 of 6
    assert roc_auc([1, 1, 0, 0, 0], [0.8, 0.4, 0.5, 0.4, 0.1]) == pytest.approx(4.5 / 6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn_with_ties(seed: int) -> None:
    y, p = _random_case(seed)
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))


def test_roc_auc_with_one_class_is_nan() -> None:
    assert math.isnan(roc_auc([1, 1], [0.2, 0.9]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pr_auc_is_average_precision_as_sklearn_computes_it(seed: int) -> None:
    y, p = _random_case(seed)
    assert pr_auc(y, p) == pytest.approx(skm.average_precision_score(y, p))


def test_pr_auc_of_a_hand_worked_case() -> None:
    # ranked: 0.9 pos (P=1, R=.5), 0.6 neg, 0.3 pos (P=2/3, R=1): AP = .5*1 + .5*2/3
    assert pr_auc([1, 0, 1], [0.9, 0.6, 0.3]) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_ece_of_a_hand_worked_case() -> None:
    # bin [0.2,0.3): p 0.2, 0.2 with 0 defects -> |0 - 0.2| ; bin [0.9,1]: p 0.9, 1.0, 1 defect
    # of 2 -> |0.5 - 0.95|. ECE = 2/4 * 0.2 + 2/4 * 0.45
    ece = expected_calibration_error([0, 0, 1, 0], [0.2, 0.2, 0.9, 1.0])
    assert ece == pytest.approx(0.5 * 0.2 + 0.5 * 0.45)


def test_ece_matches_an_independent_loop() -> None:
    y, p = _random_case(5)
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        inside = [
            (yy, pp) for yy, pp in zip(y, p, strict=True) if lo <= pp < hi or (b == 9 and pp == 1.0)
        ]
        if inside:
            ys, ps = zip(*inside, strict=True)
            total += len(inside) / len(y) * abs(np.mean(ys) - np.mean(ps))
    assert expected_calibration_error(y, p) == pytest.approx(total)


def test_tuned_threshold_maximises_macro_f1_over_the_grid() -> None:
    y, p = _random_case(3)
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    t, f1 = tune_threshold(y, p, grid)
    scores = {g: skm.f1_score(y, (p >= g).astype(int), average="macro") for g in grid}
    assert f1 == pytest.approx(max(scores.values()))
    tied = sorted(g for g, s in scores.items() if s == pytest.approx(max(scores.values())))
    assert t == tied[(len(tied) - 1) // 2]


def test_tied_thresholds_resolve_to_the_middle_of_the_tie_for_margin() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9])  # every threshold in (0.2, 0.8] separates perfectly
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    t, f1 = tune_threshold(y, p, grid)
    assert f1 == 1.0
    assert t == 0.5  # middle of 0.25 .. 0.80
