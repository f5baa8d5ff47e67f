"""`weldmon evaluate --compare`: two artifacts on the same files, paired (training/paired.py):
McNemar's exact test on the decisions and a folder bootstrap of the ROC-AUC difference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scipy.stats import binomtest

from tests.support.artifacts import export_untrained
from training.evaluate import evaluate
from training.paired import mcnemar_exact, paired_comparison
from weldmon.cli import main

torch.set_num_threads(1)


@pytest.mark.parametrize("only_a", [0, 1, 3, 7, 20])
@pytest.mark.parametrize("only_b", [0, 2, 5, 9, 31])
def test_mcnemar_exact_is_the_two_sided_binomial_test_of_the_discordant_rows(
    only_a: int, only_b: int
) -> None:
    n = only_a + only_b
    expected = 1.0 if n == 0 else binomtest(only_a, n, 0.5).pvalue
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="counts"):
        mcnemar_exact(-1, 3)


@pytest.mark.real_data
@pytest.mark.slow
def test_evaluate_compare_pairs_the_same_files_and_reports_both_tests(
    weld_audio_dir: Path,
    compat_artifact: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    candidate = export_untrained(tmp_path / "candidate", seed=11).path
    report = tmp_path / "report"
    args = ["evaluate", "--model", str(compat_artifact), "--compare", str(candidate)]
    code = main(
        [*args, "--data-root", str(weld_audio_dir), "--mode", "file", "--report", str(report)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed

    paired = json.loads((report / "paired.json").read_text())["file"]
    a = evaluate(compat_artifact, weld_audio_dir)
    b = evaluate(candidate, weld_audio_dir)
    again = paired_comparison(a.files, b.files)
    assert paired == again.as_dict()
    judged = [f for f in a.files if f.judged]
    assert paired["pairs"] == len(judged) == a.metrics["TOTAL_FILES"]
    counts = ("both_right", "only_a_right", "only_b_right", "both_wrong")
    assert sum(paired[k] for k in counts) == paired["pairs"]
    assert paired["accuracy_a"] == pytest.approx(a.metrics["ACCURACY"])
    assert paired["roc_auc_a"] == pytest.approx(a.metrics["ROC_AUC"])
    assert paired["roc_auc_b"] == pytest.approx(b.metrics["ROC_AUC"])
    assert paired["mcnemar_p"] == mcnemar_exact(paired["only_a_right"], paired["only_b_right"])
    low, high = paired["roc_auc_diff_low"], paired["roc_auc_diff_high"]
    assert low <= high and paired["ranking_differs"] == (not low <= 0.0 <= high)
    assert f"PAIRED_MCNEMAR_P={paired['mcnemar_p']:.6f}" in printed


@pytest.mark.real_data
def test_an_artifact_compared_with_itself_differs_by_nothing(
    weld_audio_dir: Path, compat_artifact: Path
) -> None:
    rows = evaluate(compat_artifact, weld_audio_dir).files
    same = paired_comparison(rows, rows, resamples=200)
    assert same.only_a_right == same.only_b_right == 0 and same.mcnemar_p == 1.0
    assert same.roc_auc_diff == same.roc_auc_diff_low == same.roc_auc_diff_high == 0.0
    assert not same.decisions_differ and not same.ranking_differs
