"""Leave-one-config-folder-out cross-validation on a tiny synthetic set."""

from __future__ import annotations

import pytest
import torch

from training.config import make_config
from training.cv import cross_validate, pooled_metrics
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
        {"y_true": 1, "p_defect": 0.9, "label": 1},
        {"y_true": 1, "p_defect": 0.4, "label": 0},
        {"y_true": 0, "p_defect": 0.3, "label": 0},
        {"y_true": 0, "p_defect": 0.6, "label": 1},
    ]
    m = pooled_metrics(rows, 2)
    assert (m["TP"], m["FN"], m["TN"], m["FP"]) == (1, 1, 1, 1)
    assert m["ROC_AUC"] == pytest.approx(0.75)
    assert m["F1_DEFECT"] == pytest.approx(0.5)
