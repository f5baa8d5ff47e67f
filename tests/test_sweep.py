"""`weldmon sweep`: same seed and split for every run, ranked leaderboard, promotion."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from deploy.export import file_sha256
from training.config import ConfigError
from training.sweep import load_sweep, rank
from training.synthetic import generate_synthetic_dataset, tiny_config_values
from weldmon.cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sweep")
    generate_synthetic_dataset(base / "data", runs_per_config=2)
    (base / "train.yaml").write_text(
        yaml.safe_dump({**tiny_config_values(base / "data"), "epochs": 2})
    )
    sweep = {
        "base_config": "train.yaml",
        "output_dir": str(base / "out"),
        "runs": [
            {"name": "slow", "overrides": {"lr": 1e-5}},
            {"name": "fast", "overrides": {"lr": 1e-3, "good_window_weight": 0.5}},
        ],
    }
    (base / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return base / "sweep.yaml"


@pytest.fixture(scope="module")
def swept(sweep_file: Path) -> Path:
    assert main(["sweep", "--config", str(sweep_file), "--no-progress"]) == 0
    return sweep_file.parent / "out"


def test_every_run_uses_the_same_seed_and_split(swept: Path) -> None:
    configs = [json.loads((swept / n / "config.json").read_text()) for n in ("slow", "fast")]
    assert configs[0]["seed"] == configs[1]["seed"]
    assert configs[0]["split_file"] == configs[1]["split_file"] == str(swept / "split.json")
    splits = [(swept / n / "split.json").read_text() for n in ("slow", "fast")]
    assert splits[0] == splits[1] == (swept / "split.json").read_text()


def test_leaderboard_is_ranked_by_f1_defect_then_tie_breakers(swept: Path) -> None:
    with (swept / "leaderboard.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["name"] for r in rows} == {"slow", "fast"}
    keys = [
        (float(r["F1_DEFECT"]), float(r["PRECISION_DEFECT"]), float(r["RECALL_DEFECT"]))
        for r in rows
    ]
    assert keys == sorted(keys, reverse=True)
    for r in rows:  # the leaderboard's figures are the evaluator's figures
        metrics = json.loads((swept / r["name"] / "eval" / "metrics.json").read_text())["metrics"]
        assert float(r["F1_DEFECT"]) == pytest.approx(metrics["F1_DEFECT"])
        assert r["sha256"] == file_sha256(swept / r["name"] / "deploy_single_label.pt")
    assert "| name |" in (swept / "leaderboard.md").read_text()


def test_promote_freezes_artifact_sha_config_and_report(sweep_file: Path, swept: Path) -> None:
    assert main(["sweep", "--config", str(sweep_file), "--promote", "fast"]) == 0
    dest = swept / "promoted" / "fast"
    artifact = dest / "deploy_single_label.pt"
    assert file_sha256(artifact) == file_sha256(swept / "fast" / "deploy_single_label.pt")
    assert (dest / "deploy_single_label.pt.sha256").read_text().startswith(file_sha256(artifact))
    assert json.loads((dest / "config.json").read_text())["good_window_weight"] == 0.5
    assert (dest / "eval" / "report.html").is_file()


def test_promoting_an_unknown_run_is_a_usage_error(sweep_file: Path, swept: Path) -> None:
    assert main(["sweep", "--config", str(sweep_file), "--promote", "nope"]) == 2


def test_a_run_may_not_change_the_seed(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        yaml.safe_dump({"base_config": "b.yaml", "runs": [{"name": "x", "overrides": {"seed": 1}}]})
    )
    with pytest.raises(ConfigError, match="seed"):
        load_sweep(tmp_path / "s.yaml")


def test_rank_uses_tie_breakers_and_puts_nan_last() -> None:
    rows = [
        {"name": "a", "F1": 0.8, "P": 0.5},
        {"name": "b", "F1": 0.8, "P": 0.7},
        {"name": "c", "F1": math.nan, "P": 0.9},
        {"name": "d", "F1": 0.9, "P": 0.1},
    ]
    assert [r["name"] for r in rank(rows, ["F1", "P"])] == ["d", "b", "a", "c"]
