"""`evaluate` on the original pipeline's artifact and the real recordings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
def test_fast_evaluation_agrees_with_predict_to_float32_rounding(
    compat_artifact: Path, weld_audio_dir: Path
) -> None:
    exact = {f.run_id: f for f in evaluate(compat_artifact, weld_audio_dir, workers=1).files}
    fast = evaluate(compat_artifact, weld_audio_dir, workers=2, fast=True).files
    assert len(fast) == len(exact)
    for f in fast:
        assert f.p_defect == pytest.approx(exact[f.run_id].p_defect, abs=1e-6)
        assert f.label == exact[f.run_id].label
        assert f.window_probs == pytest.approx(exact[f.run_id].window_probs, abs=1e-6)
