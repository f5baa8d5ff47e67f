"""A model's name and version travel with the artifact (export, the ONNX twin, events), and
`weldmon model info` shows what an artifact says about itself, the original's included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from deploy.digest import file_sha256
from deploy.loader import load_artifact
from tests.support.artifacts import export_untrained
from tests.support.data import COMPAT_SHA256
from training.checkpoint import BEST_NAME
from training.config import make_config
from training.synthetic import generate_synthetic_dataset, tiny_config_values
from training.train import train
from weldmon.cli import main

REPO = Path(__file__).resolve().parents[1]
# Refuses `import torch` in the child: `model info` must work on a torch-free monitor box.
NO_TORCH = "import sys; sys.modules['torch'] = None; from weldmon.cli import main; "


def _info(path: Path, *, block_torch: bool = True) -> tuple[int, dict | None, str]:
    code = NO_TORCH if block_torch else "from weldmon.cli import main; "
    done = subprocess.run(
        [sys.executable, "-c", code + f"sys.exit(main(['model', 'info', {str(path)!r}]))"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    body = json.loads(done.stdout) if done.returncode == 0 else None
    return done.returncode, body, done.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained one epoch on synthetic welds, its config naming the model."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("model-info")
    generate_synthetic_dataset(base / "data")
    values = {**tiny_config_values(base / "data"), "epochs": 1}
    cfg = make_config({**values, "model_name": "line3 fillet", "model_version": "2026.03.1"})
    train(cfg, base / "run", progress=False, log=lambda _: None)
    return base / "run"


def test_export_takes_name_and_version_from_the_training_config(
    trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "deploy_single_label.pt"
    assert main(["export", "--checkpoint", str(trained / BEST_NAME), "--output", str(out)]) == 0
    for path in (out, out.with_suffix(".onnx")):
        model = load_artifact(path)
        assert (model.model_name, model.model_version) == ("line3 fillet", "2026.03.1")
        assert model.describe()["name"] == "line3 fillet"


def test_export_flags_override_the_config_and_bad_names_are_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deploy_single_label.pt"
    ckpt = str(trained / BEST_NAME)
    args = ["export", "--checkpoint", ckpt, "--output", str(out)]
    assert main([*args, "--name", "cell 7", "--model-version", "7.1"]) == 0
    assert load_artifact(out).model_name == "cell 7"
    assert load_artifact(out).model_version == "7.1"
    assert main([*args, "--model-version", "two words"]) == 2
    assert "model version 'two words' must match" in capsys.readouterr().err


def test_model_info_shows_name_sha_threshold_front_end_provenance_and_figures(
    trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "deploy_single_label.pt"
    assert main(["export", "--checkpoint", str(trained / BEST_NAME), "--output", str(out)]) == 0
    code, info, err = _info(out)
    assert code == 0, err
    assert info is not None
    assert (info["name"], info["version"], info["format"]) == (
        "line3 fillet",
        "2026.03.1",
        "torchscript",
    )
    assert info["sha256"] == file_sha256(out) and not info["legacy"]
    model = load_artifact(out, backend="torchscript")
    assert info["threshold"] == model.threshold == info["contract"]["threshold"]
    assert info["contract"]["chunk_samples"] == model.chunk_samples
    assert info["frontend"] == model.metadata["frontend"] and info["frontend_stored"]
    assert info["provenance"]["checkpoint_sha256"] == file_sha256(trained / BEST_NAME)
    assert info["provenance"]["config"]["model_name"] == "line3 fillet"
    figures = info["evaluation"]["training_validation"]
    assert figures["metrics"] == model.metadata["provenance"]["metrics"]
    assert "optimistic" in figures["note"]  # tuned-on figures say so
    twin = info["onnx_twin"]
    assert twin["present"] and twin["made_from_this_file"]
    code, onnx_info, err = _info(out.with_suffix(".onnx"))
    assert code == 0, err
    assert onnx_info is not None
    assert onnx_info["format"] == "onnx" and onnx_info["name"] == "line3 fillet"
    assert onnx_info["source"] == {"file": out.name, "sha256": info["sha256"]}
    assert onnx_info["threshold"] == info["threshold"]


def test_model_info_reads_the_original_pipelines_artifact_without_torch(
    compat_artifact: Path,
) -> None:
    code, info, err = _info(compat_artifact)
    assert code == 0, err
    assert info is not None
    assert info["sha256"] == COMPAT_SHA256 and info["legacy"]
    assert info["name"] is None and info["version"] is None
    assert info["threshold"] == 0.705
    assert info["contract"]["defect_idx"] == 0 and info["contract"]["chunk_samples"] == 16000
    assert info["contract"]["sample_rate"] == 16000 and not info["frontend_stored"]
    assert info["frontend"]["n_fft"] == 1024 and "original pipeline" in info["note"]
    assert info["provenance"] is None and info["evaluation"] is None


def test_model_info_agrees_with_the_loader_on_the_original_artifact(compat_artifact: Path) -> None:
    code, info, _ = _info(compat_artifact)
    model = load_artifact(compat_artifact, backend="torchscript")
    assert code == 0 and info is not None
    assert info["contract"]["eval_pool_ratio"] == model.eval_pool_ratio
    assert info["contract"]["threshold"] == model.threshold
    assert info["contract"]["defect_idx"] == model.defect_idx


def test_model_info_refuses_what_is_not_an_artifact(trained: Path, tmp_path: Path) -> None:
    code, _, err = _info(trained / BEST_NAME)  # a torch.save checkpoint
    assert code == 2 and "weldmon model info:" in err and "torch.save" in err
    code, _, err = _info(tmp_path / "missing.pt")
    assert code == 2 and "no such file" in err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    code, _, err = _info(junk)
    assert code == 2 and "junk.onnx" in err


def test_events_carry_the_models_name_and_version_beside_its_sha256(
    recordings: list, tmp_path: Path
) -> None:
    out = export_untrained(tmp_path, name="line3 fillet", version="2026.03.1").path
    config = tmp_path / "monitor.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(out)},
                "state_dir": str(tmp_path),
                "mqtt": {"enabled": False},
                "logging": {"level": "error"},
            }
        )
    )
    replay = ["replay", "--config", str(config), "--no-progress", "--segmentation", "file"]
    done = subprocess.run(
        [sys.executable, "-m", "weldmon.cli", *replay, str(recordings[0].flac)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=True,
    )
    (result,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert result["model_sha256"] == file_sha256(out)
    assert (result["model_name"], result["model_version"]) == ("line3 fillet", "2026.03.1")
