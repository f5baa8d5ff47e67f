"""ONNX deploy artifacts: export, `weldmon convert`, the backend choice, and verdicts equal to
the `.pt`'s own `forward` on every real recording (the original's artifact and ours)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from deploy.audio import read_recording
from deploy.contract import META_ONNX_KEY
from deploy.digest import file_sha256
from deploy.errors import ArtifactError
from deploy.loader import load_artifact
from deploy.onnx_export import export_onnx
from tests.support.artifacts import export_untrained

# The acceptance bound: same label, |p_defect(.onnx) - p_defect(.pt forward)| <= 1e-5.
P_TOLERANCE = 1e-5


def weldmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Our exported `.pt` with its ONNX twin beside it."""
    return export_untrained(tmp_path_factory.mktemp("onnx-project"), onnx=True).path


@pytest.fixture(scope="module")
def converted_compat(tmp_path_factory, compat_artifact: Path) -> Path:
    """`weldmon convert` of the original pipeline's artifact, as a user runs it."""
    out = tmp_path_factory.mktemp("onnx-compat") / "compat.onnx"
    result = weldmon("convert", "--model", str(compat_artifact), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Converted deploy model: {out}"
    return out


def metadata_props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_export_writes_the_twin_and_its_sha256_file(project: Path):
    twin = project.with_suffix(".onnx")
    digest, name = twin.with_name(twin.name + ".sha256").read_text().split()
    assert (digest, name) == (file_sha256(twin), twin.name)


def test_twin_metadata_is_the_pt_metadata_plus_its_source(project: Path):
    pt = load_artifact(project, backend="torchscript")
    meta = json.loads(metadata_props(project.with_suffix(".onnx"))[META_ONNX_KEY])
    assert meta == {**pt.metadata, "source_file": project.name, "source_sha256": pt.sha256}
    for key in ("threshold", "eval_pool_ratio", "chunk_samples", "sample_rate", "label_names"):
        assert key in meta
    assert meta["frontend"]["n_fft"] == 1024 and meta["provenance"]["seed"] == 7


@pytest.mark.parametrize("n_windows", [1, 7, 70])
def test_onnx_window_probs_equal_torchscript_for_any_batch(project: Path, n_windows: int):
    pt = load_artifact(project, backend="torchscript")
    ox = load_artifact(project.with_suffix(".onnx"), threads=1)
    rng = np.random.default_rng(n_windows)
    x = (rng.standard_normal((n_windows, 16000)) * rng.uniform(1e-3, 0.5, (n_windows, 1))).astype(
        np.float32
    )
    np.testing.assert_allclose(ox.window_probs(x), pt.window_probs(x), atol=1e-6, rtol=0)


def test_auto_runs_the_twin_beside_a_pt_and_keeps_the_pt_as_identity(project: Path):
    model = load_artifact(project, expected_sha256=file_sha256(project))
    assert model.backend == "onnx"
    assert model.path == project and model.sha256 == file_sha256(project)
    twin = project.with_suffix(".onnx")
    assert (model.runtime_path, model.runtime_sha256) == (twin, file_sha256(twin))
    assert model.describe()["runtime_path"] == str(twin)
    assert load_artifact(project, backend="torchscript").backend == "torchscript"


def test_the_pin_applies_to_the_named_file_in_both_formats(project: Path):
    twin = project.with_suffix(".onnx")
    assert load_artifact(twin, expected_sha256=file_sha256(twin).upper()).backend == "onnx"
    for path in (project, twin):
        with pytest.raises(ArtifactError, match="does not match the pinned"):
            load_artifact(path, expected_sha256="0" * 64)


def test_a_stale_twin_is_refused_not_run(project: Path, tmp_path: Path):
    other = export_untrained(tmp_path, seed=8).path  # a different .pt, no twin of its own
    shutil.copy(project.with_suffix(".onnx"), other.with_suffix(".onnx"))
    with pytest.raises(ArtifactError, match="converted from a file with sha256"):
        load_artifact(other)
    assert load_artifact(other, backend="torchscript").backend == "torchscript"


def test_backend_choices_that_cannot_be_met_are_named(tmp_path: Path, project: Path):
    pt = export_untrained(tmp_path).path
    with pytest.raises(ArtifactError, match="weldmon convert --model"):
        load_artifact(pt, backend="onnx")
    with pytest.raises(ArtifactError, match=r"torchscript backend runs a \.pt"):
        load_artifact(project.with_suffix(".onnx"), backend="torchscript")
    with pytest.raises(ArtifactError, match="unknown inference backend"):
        load_artifact(pt, backend="tensorrt")  # type: ignore[arg-type]


def test_an_onnx_model_without_weldmon_metadata_is_refused(tmp_path: Path, project: Path):
    proto = onnx.load(str(project.with_suffix(".onnx")))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ArtifactError, match="without weldmon metadata"):
        load_artifact(bare)


def test_export_refuses_metadata_without_the_contract(tmp_path: Path):
    plain = torch.nn.Sequential(torch.nn.Linear(16000, 1), torch.nn.Flatten(0))
    with pytest.raises(ArtifactError, match="lacks the contract field"):
        export_onnx(plain, tmp_path / "x.onnx", chunk_samples=16000, metadata={"threshold": 0.5})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": 1.5}, "invalid attribute value"),
        ({"format_version": 99}, "newer than this weldmon"),
        ({"chunk_samples": 8000}, "the metadata says float windows of 8000 samples"),
    ],
)
def test_onnx_metadata_is_checked_like_the_pt(project: Path, tmp_path: Path, change, message):
    proto = onnx.load(str(project.with_suffix(".onnx")))
    entry = next(p for p in proto.metadata_props if p.key == META_ONNX_KEY)
    entry.value = json.dumps({**json.loads(entry.value), **change})
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(bad)


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ArtifactError, match="not a loadable ONNX deploy artifact"):
        load_artifact(bad)


def test_convert_refuses_a_checkpoint_and_a_wrong_output_name(tmp_path: Path, project: Path):
    ckpt = tmp_path / "best_model.pt"
    torch.save({"model_state": {}}, ckpt)
    out = weldmon("convert", "--model", str(ckpt), "--out", str(tmp_path / "x.onnx"))
    assert out.returncode == 2 and "weldmon convert:" in out.stderr
    assert "torch.save file" in out.stderr and not (tmp_path / "x.onnx").exists()
    out = weldmon("convert", "--model", str(project), "--output", str(tmp_path / "x.pt"))
    assert out.returncode == 2 and "must end in .onnx" in out.stderr


def test_converted_compat_carries_the_legacy_contract(converted_compat: Path, compat_artifact):
    model = load_artifact(converted_compat)
    assert model.backend == "onnx" and model.legacy
    assert (model.chunk_samples, model.defect_idx, model.sample_rate) == (16000, 0, 16000)
    assert model.threshold == pytest.approx(0.705) and model.eval_pool_ratio == 0.05
    assert model.metadata["source_sha256"] == file_sha256(compat_artifact)
    assert model.metadata["frontend"]["win_length"] == 640
    sha_file = converted_compat.with_name(converted_compat.name + ".sha256")
    assert sha_file.read_text().split()[0] == file_sha256(converted_compat)


@pytest.mark.real_data
@pytest.mark.parametrize("which", ["compat", "project"])
def test_onnx_verdicts_equal_the_pt_forward_on_every_real_recording(
    which, recordings, compat_artifact, converted_compat, project
):
    pt_path, onnx_path = (
        (compat_artifact, converted_compat)
        if which == "compat"
        else (project, project.with_suffix(".onnx"))
    )
    pt = load_artifact(pt_path, backend="torchscript")
    ox = load_artifact(onnx_path, threads=1)
    worst = 0.0
    for rec in recordings:
        samples = read_recording(rec.flac, 16000).samples
        label, p = pt.forward(samples)
        verdict = ox.predict(samples)
        assert verdict.label == label, rec.run_id
        assert abs(verdict.p_defect - p) <= P_TOLERANCE, rec.run_id
        assert ox.forward(samples) == (verdict.label, verdict.p_defect)
        worst = max(worst, abs(verdict.p_defect - p))
    print(f"{which}: max |p_onnx - p_pt| over {len(recordings)} recordings = {worst:.2e}")


@pytest.mark.real_data
def test_predict_and_scan_run_the_converted_compat_artifact(
    tmp_path: Path, recordings, compat_artifact, converted_compat
):
    flac = recordings[0].flac
    out = weldmon("predict", "--model", str(converted_compat), "--threads", "1", str(flac))
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    label, p = load_artifact(compat_artifact, backend="torchscript").forward(
        read_recording(flac, 16000).samples
    )
    assert record["backend"] == "onnx" and record["label"] == label
    assert abs(record["p_defect"] - p) <= P_TOLERANCE
    assert record["model_sha256"] == file_sha256(converted_compat)
    out = weldmon(
        "scan", "--model", str(converted_compat), "--out", str(tmp_path), "--no-progress", str(flac)
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "deploy_window_scan_results.json").read_text())
    whole = [r for r in summary["rows"] if r["mode"] == "recording"]
    assert summary["model"]["backend"] == "onnx" and abs(whole[0]["p_defect"] - p) <= P_TOLERANCE
