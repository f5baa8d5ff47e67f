"""`ensemble: K`: K members each holding out one group of config folders, one artifact that
averages them per window, and a threshold from the members' out-of-fold weld scores."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.audio import read_recording
from deploy.calibration import in_band
from deploy.loader import load_artifact
from deploy.pooling import topk_pool_np
from deploy.windows import cut_windows, mix_channels
from tests.support.artifacts import export_untrained
from tests.support.data import link_subset
from training.checkpoint import LAST_NAME, load_checkpoint
from training.config import make_config
from training.cv import cross_validate, format_result
from training.dataset import index_dataset
from training.ensemble import (
    ENSEMBLE_NAME,
    OOF_NAME,
    folder_groups,
    member_folder,
    train_ensemble,
)
from training.evaluate import evaluate
from training.export import classifier_from_checkpoint, export_checkpoint
from training.oof import uncertain_band
from training.prepare import DataError
from training.report import checks, write_report
from training.split import read_split
from training.synthetic import generate_synthetic_dataset, tiny_config_values
from training.train import train
from weldmon.cli import main

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
MEMBERS = 3
PROB_TOLERANCE = 1e-5  # the ensemble's logit round trip and ONNX Runtime's float32 maths


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("ensemble")
    generate_synthetic_dataset(base / "data", configs_per_class=3, runs_per_config=2)
    values = {**tiny_config_values(base / "data"), "epochs": 2, "width": 4, "ensemble": MEMBERS}
    config = base / "train.yaml"
    config.write_text(json.dumps(values))
    done = subprocess.run(
        [sys.executable, "-m", "weldmon.cli", "train", "--config", str(config),
         "--run-dir", str(base / "run"), "--no-progress"],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    exported = export_checkpoint(base / "run" / "best_model.pt", base / "run" / "ensemble.pt")
    return base, base / "run", exported, done.stdout


def _oof_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / OOF_NAME).open() as fh:
        return list(csv.DictReader(fh))


def test_every_training_weld_gets_one_out_of_fold_score_from_a_member_that_never_saw_its_folder(
    run,
) -> None:
    base, run_dir, _, _ = run
    rows = _oof_rows(run_dir)
    entries = index_dataset(base / "data", sample_rate=16000, chunk_samples=16000).entries
    assert sorted(r["weld"] for r in rows) == sorted(e.run_id for e in entries)
    for r in rows:
        split = read_split(member_folder(run_dir, int(r["member"])) / "split.json")
        assert r["config_folder"] in split.val_folders
        assert r["config_folder"] not in split.train_folders
    splits = [read_split(member_folder(run_dir, i) / "split.json") for i in range(1, MEMBERS + 1)]
    held = [f for s in splits for f in s.val_folders]
    assert sorted(held) == sorted({e.config_folder for e in entries})  # each folder once


def test_stored_and_printed_false_alarm_rate_and_recall_are_what_the_oof_scores_give(run) -> None:
    _, run_dir, exported, stdout = run
    rows = _oof_rows(run_dir)
    cal = json.loads((run_dir / ENSEMBLE_NAME).read_text())["calibration"]
    t = cal["threshold"]
    good = [float(r["score"]) for r in rows if r["label"] == "0"]
    defect = [float(r["score"]) for r in rows if r["label"] == "1"]
    assert cal["n_good"] == len(good) and cal["n_defect"] == len(defect)
    assert cal["false_alarm_rate"] == sum(s >= t for s in good) / len(good)
    assert cal["recall"] == sum(s >= t for s in defect) / len(defect)
    assert cal["band"][0] <= t - 0.05 + 1e-12 and cal["band"][1] >= t + 0.05 - 1e-12
    assert f"out-of-fold false-alarm rate {cal['false_alarm_rate']:.3f}" in stdout
    assert f"out-of-fold recall {cal['recall']:.3f}" in stdout
    assert exported.threshold == t
    for backend in ("torchscript", "onnx"):
        model = load_artifact(exported.path, backend=backend)
        assert model.metadata["calibration"] == cal
        assert model.metadata["ensemble"]["members"] == MEMBERS
        assert model.metadata["ensemble"]["seeds"] == [42, 43, 44]
        assert model.threshold == t


def test_members_with_fewer_than_10_validation_welds_are_warned_about(run) -> None:
    *_, stdout = run
    assert stdout.count("warning: small validation set: 4 welds (< 10)") == MEMBERS


def test_the_artifact_averages_its_members_window_probabilities(run) -> None:
    base, run_dir, exported, _ = run
    members = [
        classifier_from_checkpoint(load_checkpoint(member_folder(run_dir, i) / LAST_NAME))
        for i in range(1, MEMBERS + 1)
    ]
    entry = index_dataset(base / "data", sample_rate=16000, chunk_samples=16000).entries[0]
    samples = read_recording(entry.path, 16000).samples
    windows = np.ascontiguousarray(cut_windows(mix_channels(samples), 16000))
    with torch.no_grad():
        x = torch.from_numpy(windows)
        expected = torch.stack([torch.softmax(m(x), dim=1)[:, 1] for m in members]).mean(0)
    expected = expected.numpy()
    for backend in ("torchscript", "onnx"):
        model = load_artifact(exported.path, backend=backend)
        got = model.window_probs(windows)
        assert np.max(np.abs(got - expected)) < PROB_TOLERANCE
        single = model.window_probs(windows[:1])
        assert abs(float(single[0]) - float(expected[0])) < PROB_TOLERANCE
        label, p = model.forward(samples)  # the full recording through the artifact
        pooled = float(topk_pool_np(expected, model.eval_pool_ratio))
        assert abs(p - pooled) < PROB_TOLERANCE and label == int(p >= model.threshold)


def test_model_info_prints_the_calibration_and_the_wide_interval_warning(run) -> None:
    _, _, exported, _ = run
    for path in (exported.path, exported.onnx_path):
        done = subprocess.run(
            [sys.executable, "-m", "weldmon.cli", "model", "info", str(path)],
            capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        cal = info["calibration"]
        assert info["ensemble"]["members"] == MEMBERS
        assert "calibration: out-of-fold false-alarm rate" in done.stderr
        assert f"uncertain band [{cal['band'][0]:.3f}, {cal['band'][1]:.3f}]" in done.stderr
        # 6 good and 6 defect welds out of fold: fewer than 10 of each class.
        assert "warning: wide interval: only 6 out-of-fold good weld(s)" in done.stderr
        assert any("only 6 out-of-fold defect" in w for w in info["warnings"])


def test_the_same_seed_and_data_give_the_same_ensemble(run, tmp_path: Path) -> None:
    base, run_dir, _, _ = run
    values = {**tiny_config_values(base / "data"), "epochs": 2, "width": 4, "ensemble": MEMBERS}
    config = tmp_path / "train.json"
    config.write_text(json.dumps(values))
    args = ["train", "--config", str(config), "--run-dir", str(tmp_path / "again")]
    assert main([*args, "--no-progress"]) == 0
    first = json.loads((run_dir / ENSEMBLE_NAME).read_text())
    again = json.loads((tmp_path / "again" / ENSEMBLE_NAME).read_text())
    assert first["calibration"] == again["calibration"]
    assert _oof_rows(run_dir) == _oof_rows(tmp_path / "again")


def test_folder_groups_are_stratified_and_deterministic(run) -> None:
    base, *_ = run
    cfg = make_config({**tiny_config_values(base / "data"), "epochs": 1})
    data = train(cfg, base / "single", progress=False, log=lambda _: None)
    assert data.best_checkpoint.is_file()  # ensemble: 1 is the single model, as before
    bags = [*_bags(base)]
    groups = folder_groups(bags, 3, seed=42)
    assert groups == folder_groups(bags, 3, seed=42)
    assert all(len(g) == 2 for g in groups)  # 6 folders, 3 per class: one of each per group
    for g in groups:
        assert sorted(f.startswith("good_weld") for f in g) == [False, True]
    with pytest.raises(DataError, match="at least 7 config folders"):
        folder_groups(bags, 7, seed=42)


def _bags(base: Path):
    from training.prepare import make_store

    cfg = make_config({**tiny_config_values(base / "data")})
    index = index_dataset(base / "data", sample_rate=16000, chunk_samples=16000)
    return make_store(cfg).bags(index.entries, index.report)


def test_the_uncertain_band_spans_the_errors_and_the_class_overlap() -> None:
    labels = [0, 0, 0, 1, 1, 1]
    # a false alarm at 0.62, a miss at 0.31: the classes overlap on [0.31, 0.62]
    scores = [0.1, 0.2, 0.62, 0.31, 0.7, 0.9]
    assert uncertain_band(labels, scores, 0.5) == [0.31, 0.62]
    assert uncertain_band([0, 1], [0.1, 0.9], 0.5) == pytest.approx([0.45, 0.55])
    assert in_band({"band": [0.31, 0.62]}, 0.5) and not in_band({"band": [0.31, 0.62]}, 0.7)


def test_a_member_without_both_classes_is_refused_with_its_folders(tmp_path: Path) -> None:
    # one folder per class: the member holding out the defect folder would see good only
    generate_synthetic_dataset(tmp_path / "data", configs_per_class=1, runs_per_config=1)
    cfg = make_config({**tiny_config_values(tmp_path / "data"), "epochs": 1, "ensemble": 2})
    with pytest.raises(DataError, match=r"member \d holds out .* both good and defect"):
        train_ensemble(cfg, tmp_path / "run", progress=False, log=lambda _: None)


def test_cv_with_an_ensemble_trains_it_in_every_fold_and_lists_each_folds_oof_threshold(
    tmp_path: Path,
) -> None:
    # 3 folders per class: each fold trains on 5, so each of 2 members trains on both classes
    generate_synthetic_dataset(tmp_path / "data", configs_per_class=3, runs_per_config=1)
    values = {**tiny_config_values(tmp_path / "data"), "epochs": 1, "width": 4, "ensemble": 2}
    cfg = make_config(values)
    result = cross_validate(cfg, tmp_path / "cv", progress=False, log=lambda _: None)
    assert result.n_folds == 6 and len(result.fold_calibrations) == 6
    for fold in sorted((tmp_path / "cv").glob("fold_*")):
        assert (fold / "member_01" / LAST_NAME).is_file()
        assert (fold / "member_02" / LAST_NAME).is_file()
    thresholds = {r["fold"]: r["threshold"] for r in result.rows}
    for c in result.fold_calibrations:
        assert thresholds[c["fold"]] == c["threshold"]
    lines = format_result(result)
    assert any(line.startswith("ensemble out-of-fold threshold per fold") for line in lines)
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert len(summary["fold_calibrations"]) == 6


def test_convert_rebuilds_the_ensembles_onnx_twin(run, tmp_path: Path) -> None:
    _, _, exported, _ = run
    twin = tmp_path / "again.onnx"
    assert main(["convert", "--model", str(exported.path), "--output", str(twin)]) == 0
    rebuilt = load_artifact(twin)
    original = load_artifact(exported.path, backend="torchscript")
    windows = np.random.default_rng(3).normal(0, 0.05, (4, 16000)).astype(np.float32)
    assert np.max(np.abs(rebuilt.window_probs(windows) - original.window_probs(windows))) < (
        PROB_TOLERANCE
    )
    assert rebuilt.metadata["calibration"] == original.metadata["calibration"]


def test_convert_rebuilds_the_twin_of_a_single_model_project_artifact(tmp_path: Path) -> None:
    # The scripted front end's DFT bases (non-persistent buffers) once made this refuse.
    pt = export_untrained(tmp_path).path
    twin = tmp_path / "twin.onnx"
    assert main(["convert", "--model", str(pt), "--output", str(twin)]) == 0
    windows = np.random.default_rng(4).normal(0, 0.05, (3, 16000)).astype(np.float32)
    got = load_artifact(twin).window_probs(windows)
    want = load_artifact(pt, backend="torchscript").window_probs(windows)
    assert np.max(np.abs(got - want)) < PROB_TOLERANCE


@pytest.mark.real_data
@pytest.mark.slow
def test_an_ensemble_on_real_recordings_scores_each_weld_out_of_fold_and_ships_its_calibration(
    recordings: list, tmp_path: Path
) -> None:
    link_subset(recordings, tmp_path / "data", folders_per_class=3, runs_per_class=6)
    values = {"data_root": str(tmp_path / "data"), "epochs": 1, "batch_size": 4, "lr": 3e-4,
              "num_threads": 1, "width": 4, "ensemble": 3}  # fmt: skip
    cfg = make_config(values)
    result = train_ensemble(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    rows = _oof_rows(tmp_path / "run")
    welds = [r["weld"] for r in rows]
    assert len(welds) == len(set(welds)) and len(welds) >= 6  # each weld scored once
    for r in rows:
        split = read_split(member_folder(tmp_path / "run", int(r["member"])) / "split.json")
        assert r["config_folder"] in split.val_folders
    exported = export_checkpoint(result.best_checkpoint, tmp_path / "run" / "ensemble.pt")
    model = load_artifact(exported.path)  # the ONNX twin, as the daemon runs it
    cal = model.metadata["calibration"]
    good = [float(r["score"]) for r in rows if r["label"] == "0"]
    assert cal["false_alarm_rate"] == sum(s >= cal["threshold"] for s in good) / len(good)
    assert model.threshold == cal["threshold"]


def test_an_ensemble_under_torchrun_is_refused_before_joining_the_process_group(
    tmp_path: Path,
) -> None:
    config = tmp_path / "train.json"
    config.write_text(json.dumps({**tiny_config_values(tmp_path / "data"), "ensemble": 2}))
    done = subprocess.run(
        [sys.executable, "-m", "weldmon.cli", "train", "--config", str(config),
         "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
        env={**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "ensemble: 2 is not trained under torchrun; set ensemble: 1" in done.stderr


def test_resume_continues_each_member_and_rebuilds_the_same_ensemble(run, tmp_path: Path) -> None:
    base, run_dir, _, _ = run
    values = {**tiny_config_values(base / "data"), "epochs": 2, "width": 4, "ensemble": MEMBERS}
    config = tmp_path / "train.json"
    config.write_text(json.dumps(values))
    again = tmp_path / "again"
    args = ["train", "--config", str(config), "--run-dir", str(again), "--no-progress"]
    assert main(args) == 0
    (member_folder(again, 2) / LAST_NAME).unlink()  # as if stopped before member 2 finished
    for i in (2, 3):
        for name in ("best_model.pt", "metrics.csv"):
            (member_folder(again, i) / name).unlink(missing_ok=True)
    assert main([*args, "--resume"]) == 0
    first = json.loads((run_dir / ENSEMBLE_NAME).read_text())
    resumed = json.loads((again / ENSEMBLE_NAME).read_text())
    assert resumed["calibration"] == first["calibration"]
    assert _oof_rows(again) == _oof_rows(run_dir)


def test_the_evaluation_report_repeats_the_calibration_and_its_warnings(
    run, tmp_path: Path
) -> None:
    base, _, exported, _ = run
    result = evaluate(exported.path, base / "data", workers=1, mode="file")
    found = checks(result)
    assert found["calibration"] == load_artifact(exported.path).metadata["calibration"]
    assert any(w.startswith("model calibration: wide interval") for w in found["warnings"])
    html = write_report(result, tmp_path / "report").read_text()
    assert "Calibration (out of fold, from training)" in html
    assert "out-of-fold false-alarm rate" in html
