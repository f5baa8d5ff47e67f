"""The checks behind a trustworthy evaluation: intervals, overlap, degenerate models."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import FileResult
from training.metrics import folder_bootstrap, roc_auc, threshold_curves, wilson_interval
from training.trust import class_counts, degenerate_flags, overlap_warnings


def _row(folder: str, code: str, p: float, label: int) -> FileResult:
    y = int(code != "00")
    return FileResult(f"r-{folder}-{p}", f"/d/{folder}/{p}.flac", folder, code, y, p, label)


def test_wilson_interval_matches_published_values_and_stays_in_0_1() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 15/148 and 0/10.
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(15, 148)
    assert (low, high) == (pytest.approx(0.0624, abs=1e-4), pytest.approx(0.1605, abs=1e-4))
    assert wilson_interval(5, 5)[1] == 1.0


def test_class_counts_give_specificity_for_good_and_recall_per_defect_type() -> None:
    rows = [_row("g", "00", 0.1, 0), _row("g", "00", 0.7, 1), _row("d", "02", 0.8, 1)]
    counts = {c["label"]: c for c in class_counts(rows)}
    assert counts["good_weld"]["rate_is"] == "specificity" and counts["good_weld"]["rate"] == 0.5
    assert counts["burn_through"]["rate_is"] == "recall" and counts["burn_through"]["correct"] == 1


def test_one_label_for_everything_and_a_narrow_band_are_flagged() -> None:
    same = [_row("g", "00", 0.50 + i / 1000, 0) for i in range(5)]
    flags = degenerate_flags(same)
    assert any("every one of the 5 verdicts is good_weld" in f for f in flags)
    assert any("spread under" in f for f in flags)
    healthy = [_row("g", "00", 0.1, 0), _row("d", "02", 0.9, 1)]
    assert degenerate_flags(healthy) == []


def test_files_from_training_or_tuning_folders_are_warned_about() -> None:
    rows = [_row("a", "00", 0.1, 0), _row("b", "02", 0.9, 1), _row("c", "00", 0.2, 0)]
    meta = {"provenance": {"split": {"train_folders": ["a"], "val_folders": ["b"]}}}
    warnings = overlap_warnings(rows, meta)
    assert any(w.startswith("OVERLAP: 1 of 3") and "a" in w for w in warnings)
    assert any(w.startswith("TUNED-ON: 1 of 3") for w in warnings)
    enrolled = {"provenance": {"kind": "enrolled", "enrolled_folders": ["c"]}}
    assert overlap_warnings(rows, enrolled)[0].startswith("OVERLAP: 1 of 3")
    assert "cannot be checked" in overlap_warnings(rows, {})[0]
    clean = {"provenance": {"split": {"train_folders": ["x"], "val_folders": ["y"]}}}
    assert overlap_warnings(rows, clean) == []


def test_folder_bootstrap_resamples_whole_folders_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    folders = [f"g{i}" for i in range(5) for _ in range(3)] + [
        f"d{i}" for i in range(4) for _ in range(2)
    ]
    labels = {f: int(f.startswith("d")) for f in folders}
    y = np.array([labels[f] for f in folders])
    p = y * 0.3 + rng.uniform(0, 1, len(y))
    estimate = roc_auc(y, p)
    interval = folder_bootstrap(folders, labels, lambda i: roc_auc(y[i], p[i]), seed=1)
    assert interval.low <= estimate <= interval.high
    assert interval.valid == 2000  # stratified: both classes in every resample
    # A perfectly separated set has an interval of exactly [1, 1].
    perfect = folder_bootstrap(folders, labels, lambda i: roc_auc(y[i], y[i] + 0.0), seed=1)
    assert (perfect.low, perfect.high) == (1.0, 1.0)


def test_threshold_curves_count_precision_recall_and_false_alarms() -> None:
    c = threshold_curves([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], steps=11)
    at = {round(t, 1): i for i, t in enumerate(c["threshold"])}
    i = at[0.5]
    assert (c["precision"][i], c["recall"][i], c["false_alarm"][i]) == (0.5, 0.5, 0.5)
    assert (c["recall"][at[0.0]], c["false_alarm"][at[1.0]]) == (1.0, 0.0)
