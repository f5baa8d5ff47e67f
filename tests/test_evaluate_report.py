"""`weldmon evaluate`: metrics lines, per-file results equal to predict, report, bad files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from deploy.loader import load_artifact
from deploy.predict import predict_file
from training.checkpoint import BEST_NAME
from training.config import make_config
from training.evaluate import evaluate
from training.export import export_checkpoint
from training.synthetic import generate_synthetic_dataset, tiny_config_values
from training.train import train
from weldmon.cli import main

torch.set_num_threads(1)
KEYS = [
    "TOTAL_FILES", "TP", "FP", "TN", "FN", "ACCURACY", "PRECISION_DEFECT", "RECALL_DEFECT",
    "F1_DEFECT", "ROC_AUC", "PR_AUC", "ECE",
]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("evaluate")
    generate_synthetic_dataset(base / "data")
    cfg = make_config({**tiny_config_values(base / "data"), "epochs": 2})
    train(cfg, base / "run", progress=False, log=lambda _: None)
    artifact = export_checkpoint(base / "run" / BEST_NAME, base / "run" / "m.pt").path
    return base / "data", base / "run", artifact


def _parse(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line and " " not in line)


def test_evaluate_prints_every_key_and_writes_the_report(
    setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _, artifact = setup
    report = tmp_path / "report"
    code = main(
        ["evaluate", "--model", str(artifact), "--data-root", str(data), "--report", str(report)]
    )
    values = _parse(capsys.readouterr().out)
    assert code == 0
    assert list(values)[: len(KEYS)] == KEYS
    assert int(values["TOTAL_FILES"]) == 18
    assert sum(int(values[k]) for k in ("TP", "FP", "TN", "FN")) == 18
    assert {"RECALL_BURN_THROUGH", "RECALL_OVERLAP", "RECALL_LACK_OF_FUSION"} <= set(values)
    for name in (
        "per_file.csv",
        "per_file.json",
        "roc.png",
        "pr.png",
        "reliability.png",
        "confusion.png",
    ):
        assert (report / name).stat().st_size > 0
    html = (report / "report.html").read_text()
    assert all(f'"{n}"' in html for n in ("roc.png", "pr.png", "reliability.png", "per_file.csv"))


def test_per_file_p_defect_equals_weldmon_predict(setup: tuple[Path, Path, Path]) -> None:
    data, _, artifact = setup
    result = evaluate(artifact, data, workers=2)
    model = load_artifact(artifact)
    for f in result.files:
        assert f.p_defect == predict_file(model, f.path, None)["p_defect"]


def test_split_restricts_evaluation_to_the_validation_folders(
    setup: tuple[Path, Path, Path],
) -> None:
    data, run, artifact = setup
    split = json.loads((run / "split.json").read_text())
    result = evaluate(artifact, data, split_file=run / "split.json")
    assert {f.config_folder for f in result.files} == set(split["val_folders"])


def test_bad_files_become_error_rows_and_the_run_goes_on(
    setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _, artifact = setup
    bad = (
        data
        / "good_weld"
        / "good_weld_synthetic_1_01-01-24"
        / "01-01-24-0099-00"
        / "01-01-24-0099-00.flac"
    )
    bad.parent.mkdir()
    bad.write_bytes(b"\x00" * 100)
    try:
        report = tmp_path / "report"
        code = main(
            [
                "evaluate",
                "--model",
                str(artifact),
                "--data-root",
                str(data),
                "--report",
                str(report),
            ]
        )
    finally:
        bad.unlink()
        bad.parent.rmdir()
    captured = capsys.readouterr()
    assert code == 1
    values = _parse(captured.out)
    assert (values["TOTAL_FILES"], values["ERROR_FILES"]) == ("18", "1")
    assert "01-01-24-0099-00" in captured.err
    with (report / "per_file.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    errors = [r for r in rows if r["error"]]
    assert len(rows) == 19 and len(errors) == 1 and "unreadable" in errors[0]["error"]


def test_evaluate_runs_the_exported_onnx_twin_and_agrees_with_the_pt(
    setup: tuple[Path, Path, Path],
) -> None:
    data, _, artifact = setup
    twin = evaluate(artifact, data, workers=2)
    pt = evaluate(artifact, data, workers=1, backend="torchscript")
    assert (twin.model["backend"], pt.model["backend"]) == ("onnx", "torchscript")
    for e, f in zip(pt.files, twin.files, strict=True):
        assert (f.run_id, f.label) == (e.run_id, e.label)
        assert f.p_defect == pytest.approx(e.p_defect, abs=1e-5)
