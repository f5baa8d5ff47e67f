"""`evaluate` on the original pipeline's artifact and the real recordings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from deploy.audio import read_recording
from deploy.convert import convert_artifact
from deploy.loader import load_artifact
from deploy.predict import predict_file
from training.evaluate import evaluate

torch.set_num_threads(1)


@pytest.mark.real_data
def test_compat_artifact_evaluates_with_predicts_per_file_p_defect(
    compat_artifact: Path, weld_audio_dir: Path, recordings: list
) -> None:
    result = evaluate(compat_artifact, weld_audio_dir, workers=2)
    assert result.metrics["TOTAL_FILES"] == len(recordings) and not result.errors
    model = load_artifact(compat_artifact)
    for f in result.files:
        expected = predict_file(model, f.path, None)
        assert (f.p_defect, f.label) == (expected["p_defect"], expected["label"])
    # README: the random-weight artifact calls about half of the files defect.
    called = result.metrics["TP"] + result.metrics["FP"]
    assert 0 < called < len(recordings)


@pytest.mark.real_data
def test_evaluation_runs_the_onnx_twin_beside_the_pt_and_agrees_with_its_forward(
    compat_artifact: Path, weld_audio_dir: Path, tmp_path: Path
) -> None:
    pt = tmp_path / "deploy_single_label.pt"
    shutil.copy(compat_artifact, pt)
    convert_artifact(pt, pt.with_suffix(".onnx"))
    reference = load_artifact(pt, backend="torchscript")
    result = evaluate(pt, weld_audio_dir, workers=2)
    assert result.model["backend"] == "onnx" and not result.errors
    assert result.model["sha256"] == reference.sha256
    twin = load_artifact(pt)
    for f in result.files:
        samples = read_recording(f.path, 16000).samples
        label, p = reference.forward(samples)
        assert f.label == label and abs(f.p_defect - p) <= 1e-5, f.run_id
        verdict = twin.predict(samples)  # what `weldmon predict` says: the same backend
        assert (f.p_defect, f.label) == (verdict.p_defect, verdict.label)
