"""The deploy artifact contract: export, load (ours and the original's), refusals, sha256."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deploy import torchscript
from deploy.artifact import META_EXTRA_FILE
from deploy.audio import read_recording
from deploy.errors import ArtifactError, AudioError
from deploy.export import file_sha256
from deploy.loader import load_artifact
from tests.support.artifacts import export_untrained


@pytest.fixture(scope="module")
def project_artifact(tmp_path_factory) -> Path:
    return export_untrained(tmp_path_factory.mktemp("artifact")).path


def test_export_writes_artifact_and_sha256sum_compatible_file(project_artifact: Path):
    sha_file = project_artifact.with_name(project_artifact.name + ".sha256")
    digest, name = sha_file.read_text().split()
    assert name == project_artifact.name
    assert digest == file_sha256(project_artifact)


def test_exported_artifact_has_original_attributes_and_metadata(project_artifact: Path):
    module = torchscript.load(str(project_artifact))
    assert module.chunk_samples == 16000
    assert module.defect_idx == 1
    assert module.eval_pool_ratio == 0.05
    assert module.threshold == 0.5
    assert hasattr(module, "base_model")
    meta = json.loads(module.metadata_json)
    assert meta["sample_rate"] == 16000
    assert meta["label_names"] == ["good_weld", "defect"]
    assert meta["frontend"]["n_mels"] == 40
    assert meta["provenance"]["seed"] == 7


def test_forward_returns_int64_label_and_float_p_defect(project_artifact: Path):
    module = torchscript.load(str(project_artifact))
    out = module(torch.randn(2, 40000) * 0.1)
    assert out["label"].dtype == torch.int64 and out["label"].dim() == 0
    assert out["p_defect"].dtype == torch.float32 and 0.0 <= float(out["p_defect"]) <= 1.0
    assert int(out["label"]) == int(float(out["p_defect"]) >= 0.5)


def test_loader_reads_compat_artifact_assuming_16khz(compat_artifact: Path):
    model = load_artifact(compat_artifact)
    assert model.legacy
    assert model.sample_rate == 16000
    assert (model.chunk_samples, model.defect_idx) == (16000, 0)
    assert model.threshold == pytest.approx(0.705)
    assert model.sha256 == "9fa888fd5505fb57c8c10ffe5d76129779659e3bff0531a420d717f81f9bc83f"


def test_loader_refuses_a_file_whose_sha256_differs_from_the_pin(project_artifact: Path):
    with pytest.raises(ArtifactError, match="does not match the pinned"):
        load_artifact(project_artifact, expected_sha256="0" * 64)
    assert load_artifact(project_artifact, file_sha256(project_artifact)).sha256


def test_loader_refuses_a_non_archive_file(tmp_path: Path):
    bad = tmp_path / "model.pt"
    bad.write_text("hello")
    with pytest.raises(ArtifactError, match="not a zip archive"):
        load_artifact(bad)


def test_loader_refuses_a_truncated_artifact(tmp_path: Path, project_artifact: Path):
    data = project_artifact.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError):
        load_artifact(cut)


def test_loader_refuses_a_torch_save_checkpoint_without_unpickling_it(tmp_path: Path):
    ckpt = tmp_path / "best_model.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "threshold": 0.5}, ckpt)
    with pytest.raises(ArtifactError, match=r"torch\.save file"):
        load_artifact(ckpt)


def test_loader_names_a_missing_contract_attribute(tmp_path: Path):
    class NoThreshold(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.chunk_samples = 16000
            self.defect_idx = 1
            self.eval_pool_ratio = 0.05
            self.base_model = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path / "partial.pt"
    torchscript.save(torchscript.script(NoThreshold()), str(path))
    with pytest.raises(ArtifactError, match="threshold"):
        load_artifact(path)


def test_loader_names_a_metadata_field_that_contradicts_the_module(
    tmp_path: Path, project_artifact: Path
):
    tampered = tmp_path / "tampered.pt"
    with zipfile.ZipFile(project_artifact) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith(f"extra/{META_EXTRA_FILE}"):
                meta = json.loads(data)
                meta["threshold"] = 0.9
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    with pytest.raises(ArtifactError, match="threshold"):
        load_artifact(tampered)


def test_window_probs_in_batches_equal_one_batch(project_artifact: Path):
    model = load_artifact(project_artifact)
    x = np.random.default_rng(3).standard_normal((10, 16000)).astype(np.float32) * 0.1
    np.testing.assert_allclose(
        model.window_probs(x, batch_size=3), model.window_probs(x), atol=1e-6
    )


def test_predict_refuses_audio_shorter_than_one_window(project_artifact: Path):
    model = load_artifact(project_artifact)
    with pytest.raises(AudioError, match="shorter than one window"):
        model.predict(np.zeros((1, 15999), dtype=np.float32))


def test_self_test_passes_on_a_good_artifact(project_artifact: Path):
    load_artifact(project_artifact).self_test()


@pytest.mark.real_data
@pytest.mark.parametrize("which", ["compat", "project"])
def test_predict_equals_the_artifacts_own_forward_on_every_real_recording(
    which, recordings, compat_artifact, project_artifact
):
    model = load_artifact(compat_artifact if which == "compat" else project_artifact)
    labels = []
    for rec in recordings:
        audio = read_recording(rec.flac, model.sample_rate)
        verdict = model.predict(audio.samples)
        label, p = model.forward(audio.samples)
        assert verdict.label == label, rec.run_id
        assert abs(verdict.p_defect - p) <= 1e-5, rec.run_id
        assert verdict.n_windows == int(rec.duration_s)
        labels.append(label)
    if which == "compat":  # its README: about half of the shared files are labelled defect
        assert 0 < sum(labels) < len(labels)
