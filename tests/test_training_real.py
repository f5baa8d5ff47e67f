"""Real recordings end to end: train -> export -> evaluate through the `weldmon` command.

A subset of the shared recordings (three config folders per class, linked into a temporary
tree laid out like the dataset) keeps this to about a minute on two shared cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from deploy.audio import read_recording
from deploy.loader import load_artifact
from tests.support.data import link_subset
from weldmon.cli import main

torch.set_num_threads(1)
FOLDERS_PER_CLASS = 3


@pytest.mark.real_data
@pytest.mark.slow
def test_train_export_evaluate_run_end_to_end_on_real_recordings(
    recordings: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chosen = link_subset(recordings, tmp_path / "data", FOLDERS_PER_CLASS, 2 * FOLDERS_PER_CLASS)
    config = {
        "epochs": 1,
        "batch_size": 4,
        "lr": 3e-4,
        "val_fraction": 0.34,
        "num_threads": 1,
        "ensemble": 1,  # the single model and its split.json, which evaluate --split reads
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    data = str(tmp_path / "data")
    train_args = ["--config", str(tmp_path / "train.yaml"), "--data-root", data]
    assert main(["train", *train_args, "--run-dir", str(run), "--no-progress"]) == 0
    artifact = run / "deploy_single_label.pt"
    assert (
        main(["export", "--checkpoint", str(run / "best_model.pt"), "--output", str(artifact)]) == 0
    )
    split = str(run / "split.json")
    report = str(tmp_path / "eval")
    eval_args = ["--model", str(artifact), "--data-root", data, "--split", split]
    assert main(["evaluate", *eval_args, "--report", report]) == 0
    out = capsys.readouterr().out
    assert "TOTAL_FILES=4" in out and "Exported deploy model:" in out
    model = load_artifact(artifact)
    for r in chosen[:2] + chosen[-2:]:
        samples = read_recording(r.flac, model.sample_rate).samples
        verdict = model.predict(samples)
        assert (verdict.label, verdict.p_defect) == model.forward(samples)
