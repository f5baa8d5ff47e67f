"""Leave-one-config-folder-out cross-validation on a tiny synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.config import make_config
from training.cv import cross_validate, format_result, pooled_metrics
from training.synthetic import generate_synthetic_dataset, tiny_config_values

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cv(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("cv")
    generate_synthetic_dataset(base / "data", configs_per_class=2, runs_per_config=2)
    cfg = make_config({**tiny_config_values(base / "data"), "epochs": 2})
    return cross_validate(cfg, base / "out", progress=False, log=lambda _: None), base / "out"


def test_every_folder_is_held_out_once_and_never_trained_on(cv) -> None:
    result, _ = cv
    assert result.n_folds == 4 and result.metrics["FOLDS"] == 4
    folds = {}
    for row in result.rows:
        folds.setdefault(row["fold"], set()).add(row["config_folder"])
    assert all(len(f) == 1 for f in folds.values())
    assert len({next(iter(f)) for f in folds.values()}) == 4
    assert result.metrics["FILES"] == 8


def test_pooled_metrics_are_computed_over_all_out_of_fold_rows(cv) -> None:
    result, out = cv
    assert result.metrics == pooled_metrics(result.rows, 4)
    assert (out / "oof.csv").read_text().count("\n") == 9
    assert (out / "cv_summary.json").is_file()


def test_pooled_metrics_of_a_hand_made_set() -> None:
    rows = [
        {"config_folder": "d", "run_id": "a", "y_true": 1, "p_defect": 0.9, "label": 1},
        {"config_folder": "d", "run_id": "b", "y_true": 1, "p_defect": 0.4, "label": 0},
        {"config_folder": "g", "run_id": "c", "y_true": 0, "p_defect": 0.3, "label": 0},
        {"config_folder": "g", "run_id": "d", "y_true": 0, "p_defect": 0.6, "label": 1},
    ]
    m = pooled_metrics(rows, 2)
    assert (m["TP"], m["FN"], m["TN"], m["FP"]) == (1, 1, 1, 1)
    assert m["ROC_AUC"] == pytest.approx(0.75)
    assert m["F1_DEFECT"] == pytest.approx(0.5)
    assert m["FALSE_ALARM_RATE"] == pytest.approx(0.5)
    assert (m["FOLDERS"], m["FILES"], m["WELDS"]) == (2, 4, 4)


def test_cv_prints_intervals_and_a_per_folder_table(cv) -> None:
    result, out = cv
    lines = format_result(result)
    for key in ("ROC_AUC", "PR_AUC", "F1_DEFECT"):
        (line,) = [x for x in lines if x.startswith(f"{key}=")]
        assert "95% CI [" in line
        assert result.intervals[key].low <= result.metrics[key] <= result.intervals[key].high
    table = [x for x in lines if x.startswith("| ") and "_synthetic_" in x]
    assert len(table) == 4 == len(result.folders)
    assert sum(f["welds"] for f in result.folders) == result.metrics["WELDS"]
    summary = json.loads((out / "cv_summary.json").read_text())
    assert set(summary["intervals_95"]) == {"ROC_AUC", "PR_AUC", "F1_DEFECT"}


def test_each_fold_threshold_comes_from_its_training_folders(cv) -> None:
    result, out = cv
    for row in result.rows:
        fold = next(out.glob(f"fold_{row['fold']:02d}_*"))
        assert row["config_folder"] in fold.name
        ckpt = torch.load(fold / "best_model.pt", weights_only=True)
        assert row["threshold"] == ckpt["threshold"]
        fold_info = json.loads((fold / "fold.json").read_text())
        assert fold_info["held_out"] == row["config_folder"]
        assert row["config_folder"] not in fold_info["threshold_and_checkpoint_from"]
        assert fold_info["threshold_and_checkpoint_from"] == fold_info["trained_on"]


def test_a_cell_reference_from_the_training_goods_only_raises_held_out_scores(
    tmp_path: Path,
) -> None:
    generate_synthetic_dataset(tmp_path / "data", configs_per_class=2, runs_per_config=3)
    values = {**tiny_config_values(tmp_path / "data"), "epochs": 2}
    quiet = lambda _: None  # noqa: E731
    plain = cross_validate(make_config(values), tmp_path / "a", progress=False, log=quiet)
    cfg = make_config({**values, "cell_reference": True})
    fused = cross_validate(cfg, tmp_path / "b", progress=False, log=quiet)
    by_weld = {r["weld"]: r for r in plain.rows}
    assert len(fused.rows) == len(by_weld) == 12
    raised = 0
    for row in fused.rows:
        assert row["p_defect"] >= by_weld[row["weld"]]["p_defect"] - 1e-6
        assert row["threshold"] == by_weld[row["weld"]]["threshold"]
        raised += row["p_defect"] > by_weld[row["weld"]]["p_defect"] + 1e-3
    assert raised > 0


def test_too_few_training_goods_for_a_reference_fall_back_to_the_classifier(cv, tmp_path) -> None:
    result, out = cv
    summary = json.loads((out / "cv_summary.json").read_text())
    cfg = make_config({**summary["config"], "cell_reference": True})
    notes: list[str] = []
    fused = cross_validate(cfg, tmp_path / "c", progress=False, log=notes.append)
    # Holding out one of the two good folders leaves two good welds: no reference there.
    held_good = [(a, b) for a, b in zip(fused.rows, result.rows, strict=True) if a["y_true"] == 0]
    assert len(held_good) == 4
    assert all(a["p_defect"] == b["p_defect"] for a, b in held_good)
    assert sum("no cell reference: 2 training good weld(s)" in n for n in notes) == 2
