"""`weldmon export`: checkpoint -> deploy artifact that keeps the deploy contract."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.audio import read_recording
from deploy.export import file_sha256
from deploy.loader import load_artifact
from training.checkpoint import BEST_NAME, load_checkpoint
from training.config import make_config
from training.dataset import index_dataset
from training.synthetic import generate_synthetic_dataset, tiny_config_values
from training.train import train
from weldmon.cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("export")
    generate_synthetic_dataset(base / "data")
    cfg = make_config({**tiny_config_values(base / "data"), "epochs": 1})
    train(cfg, base / "run", progress=False, log=lambda _: None)
    return base / "data", base / "run"


def test_export_prints_the_original_lines_and_writes_the_sha256_file(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = trained
    out = run / "deploy_single_label.pt"
    code = main(["export", "--checkpoint", str(run / BEST_NAME), "--output", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == f"Exported deploy model: {out}"
    threshold = load_checkpoint(run / BEST_NAME)["threshold"]
    assert lines[1] == (
        f"chunk_samples=16000 | defect_idx=1 | eval_pool_ratio=0.05 | threshold={threshold}"
    )
    sha = file_sha256(out)
    assert lines[2] == f"sha256={sha}"
    assert (run / "deploy_single_label.pt.sha256").read_text() == f"{sha}  {out.name}\n"
    twin = run / "deploy_single_label.onnx"
    assert lines[3] == f"ONNX twin: {twin}"
    assert lines[4] == f"onnx sha256={file_sha256(twin)}"
    assert (run / "deploy_single_label.onnx.sha256").read_text() == (
        f"{file_sha256(twin)}  {twin.name}\n"
    )


def test_exported_artifact_keeps_the_deploy_contract(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, run = trained
    out = tmp_path / "m.pt"
    assert main(["export", "--checkpoint", str(run / BEST_NAME), "--output", str(out)]) == 0
    model = load_artifact(out, expected_sha256=file_sha256(out), backend="torchscript")
    model.self_test()
    ckpt = load_checkpoint(run / BEST_NAME)
    assert (model.chunk_samples, model.defect_idx, model.eval_pool_ratio) == (16000, 1, 0.05)
    assert model.threshold == ckpt["threshold"]
    assert model.metadata["provenance"]["epoch"] == ckpt["epoch"]
    for entry in index_dataset(data).entries[:4]:
        samples = read_recording(entry.path, model.sample_rate).samples
        out_dict = model.module(torch.from_numpy(samples))
        assert out_dict["label"].dtype == torch.int64
        label, p = model.forward(samples)
        verdict = model.predict(samples)
        assert (verdict.label, verdict.p_defect) == (label, p)
        stereo = np.vstack([samples, samples])
        assert model.predict(stereo).p_defect == pytest.approx(p, abs=1e-6)


def test_export_writes_an_onnx_twin_with_the_same_metadata_and_verdicts(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, run = trained
    out = tmp_path / "m.pt"
    assert main(["export", "--checkpoint", str(run / BEST_NAME), "--output", str(out)]) == 0
    pt = load_artifact(out, backend="torchscript")
    twin = load_artifact(out)  # auto: the twin beside the .pt, under ONNX Runtime
    assert twin.backend == "onnx" and twin.runtime_path == tmp_path / "m.onnx"
    assert twin.sha256 == pt.sha256  # the identity and the pin are the named file's
    assert twin.metadata == {**pt.metadata, "source_file": "m.pt", "source_sha256": pt.sha256}
    for entry in index_dataset(data).entries[:4]:
        samples = read_recording(entry.path, pt.sample_rate).samples
        label, p = pt.forward(samples)
        verdict = twin.predict(samples)
        assert verdict.label == label and verdict.p_defect == pytest.approx(p, abs=1e-5)


def test_export_of_a_missing_checkpoint_is_bad_input_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["export", "--checkpoint", str(tmp_path / "nope.pt"), "--output", str(tmp_path / "o.pt")]
    )
    assert code == 2  # README: 2 = bad arguments, config or model; nothing was written
    assert re.search(r"nope\.pt: no such checkpoint", capsys.readouterr().err)
    assert not (tmp_path / "o.pt").exists()
