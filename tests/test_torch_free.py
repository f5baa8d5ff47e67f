"""The base install (`pip install weldmon`, no torch) judges with ONNX artifacts: predict,
scan, replay and the daemon run in a second virtual environment that has no torch, and give
the `.pt`'s verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from deploy.audio import read_recording
from deploy.digest import file_sha256
from deploy.loader import load_artifact
from tests.support import shifts
from tests.support.artifacts import export_untrained
from tests.support.base_venv import run_in_base
from tests.support.daemon import WeldmonRun, write_monitor_config

pytestmark = pytest.mark.slow

# deploy modules the ONNX path uses; none may import torch, even where torch is installed.
BASE_MODULES = [
    "deploy",
    "deploy.audio",
    "deploy.cli",
    "deploy.contract",
    "deploy.digest",
    "deploy.errors",
    "deploy.loader",
    "deploy.model",
    "deploy.onnx_model",
    "deploy.pooling",
    "deploy.predict",
    "deploy.scan",
    "deploy.windows",
    "weldmon.cli",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return export_untrained(tmp_path_factory.mktemp("torch-free"), onnx=True).path


@pytest.fixture(scope="module")
def compat_onnx(tmp_path_factory, compat_artifact: Path) -> Path:
    from deploy.convert import convert_artifact

    out = tmp_path_factory.mktemp("torch-free-compat") / "compat.onnx"
    convert_artifact(compat_artifact, out)
    return out


def test_the_base_install_has_no_torch_and_its_modules_import_none(base_python: Path):
    probe = run_in_base(base_python, "-c", "import torch")
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    code = (
        "import importlib, sys\n"
        f"for name in {BASE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx')))\n"
    )
    out = run_in_base(base_python, "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_runs_in_the_base_install(base_python: Path):
    out = run_in_base(base_python, "-m", "weldmon.cli", "--help")
    assert out.returncode == 0, out.stderr
    assert "predict" in out.stdout and "convert" in out.stdout


@pytest.mark.real_data
@pytest.mark.parametrize("which", ["compat", "project"])
def test_scan_without_torch_gives_the_pt_verdict_on_every_real_recording(
    which, base_python, recordings, compat_artifact, compat_onnx, project, tmp_path
):
    twin = project.with_suffix(".onnx")
    pt, onnx_file = (compat_artifact, compat_onnx) if which == "compat" else (project, twin)
    files = [str(r.flac) for r in recordings]
    out = run_in_base(
        base_python, "-m", "weldmon.cli", "scan", "--model", str(onnx_file), "--threads", "1",
        "--out", str(tmp_path), "--no-progress", *files,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "deploy_window_scan_results.json").read_text())["rows"]
    whole = {r["file"]: r for r in rows if r["mode"] == "recording"}
    reference = load_artifact(pt, backend="torchscript")
    worst = 0.0
    for rec in recordings:
        label, p = reference.forward(read_recording(rec.flac, 16000).samples)
        row = whole[str(rec.flac)]
        assert row["label"] == label, rec.run_id
        assert abs(row["p_defect"] - p) <= 1e-5, rec.run_id
        worst = max(worst, abs(row["p_defect"] - p))
    print(f"{which} without torch: max |p_onnx - p_pt| = {worst:.2e} over {len(recordings)}")


@pytest.mark.real_data
def test_predict_without_torch_runs_the_twin_beside_a_pt(base_python, recordings, project):
    flac = recordings[0].flac
    out = run_in_base(
        base_python, "-m", "weldmon.cli", "predict", "--model", str(project), str(flac)
    )
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    label, p = load_artifact(project, backend="torchscript").forward(
        read_recording(flac, 16000).samples
    )
    assert record["backend"] == "onnx" and record["label"] == label
    assert abs(record["p_defect"] - p) <= 1e-5


def test_a_pt_without_twin_names_what_to_install_or_run(base_python, tmp_path):
    pt = export_untrained(tmp_path).path
    out = run_in_base(base_python, "-m", "weldmon.cli", "predict", "--model", str(pt), str(pt))
    assert out.returncode == 2
    assert "needs torch" in out.stderr and "weldmon[torch]" in out.stderr
    assert "weldmon convert --model" in out.stderr
    out = run_in_base(base_python, "-m", "weldmon.cli", "convert", "--model", str(pt))
    assert out.returncode == 1 and "weldmon[export]" in out.stderr


def _replay_in_base(
    base_python: Path, config: Path, files: list[Path], segmentation: str
) -> list[dict]:
    out = run_in_base(
        base_python, "-m", "weldmon.cli", "replay", "--config", str(config),
        "--segmentation", segmentation, *map(str, files),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def _replay_config(folder: Path, model: Path) -> Path:
    state = folder / "state"
    state.mkdir(parents=True, exist_ok=True)
    config = folder / "replay.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(model)},
                "state_dir": str(state),
                "mqtt": {"enabled": False},
                "logging": {"level": "error"},
            }
        )
    )
    return config


@pytest.mark.real_data
def test_replay_without_torch_gives_the_pt_verdict_on_every_real_recording(
    base_python, recordings, compat_artifact, compat_onnx, tmp_path
):
    files = [r.flac for r in recordings]
    results = _replay_in_base(base_python, _replay_config(tmp_path, compat_onnx), files, "file")
    assert [r["source"]["name"] for r in results] == [str(f) for f in files]
    reference = load_artifact(compat_artifact, backend="torchscript")
    for rec, result in zip(recordings, results, strict=True):
        label, p = reference.forward(read_recording(rec.flac, 16000).samples)
        assert result["label"] == label, rec.run_id
        assert abs(result["p_defect"] - p) <= 1e-5, rec.run_id
        assert not result["degraded"]


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.real_data
def test_the_daemon_runs_without_torch_and_publishes_what_replay_says(
    base_python, pulse, mosquitto, mqtt_subscriber, recordings, project, tmp_path
):
    rate = 16_000
    shift = shifts.build_shift([recordings[i].flac for i in (4, 17)], rate, 3.0, (3.0, 10.0))
    shift_file = tmp_path / "shift.wav"
    sf.write(shift_file, shift, rate, subtype="FLOAT")
    pulse.create_sink("basecell", rate, 1)
    # The .pt named, its twin run (auto): the pin and the identity stay the .pt's.
    config = write_monitor_config(tmp_path, project, mosquitto, mqtt={"client_id": "wm-base"})
    pinned = yaml.safe_load(config.read_text())
    pinned["model"]["sha256"] = file_sha256(project)
    config.write_text(yaml.safe_dump(pinned))
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log", base_python)
    try:
        (loaded,) = daemon.wait_for_log("model_loaded", 90.0)
        daemon.wait_for_log("capture_opened", 90.0)
        collector.wait_for("weldmon/status", 1, 90.0)
        player = pulse.play_array(shift[:, None], rate, "basecell")
        assert player.wait(shift.shape[0] / rate + 30) == 0
        collector.wait_for("weldmon/+/weld/result", 2, 30.0)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.tail()
    assert loaded["backend"] == "onnx"
    assert loaded["runtime_path"] == str(project.with_suffix(".onnx"))
    live = [json.loads(m.payload) for m in collector.matching("weldmon/+/weld/result")]
    replayed = _replay_in_base(base_python, _replay_config(tmp_path, project), [shift_file], "gate")
    assert len(live) == len(replayed) == 2
    for got, want in zip(live, replayed, strict=True):
        assert got["model_sha256"] == want["model_sha256"] == file_sha256(project)
        assert got["label"] == want["label"]
        assert got["duration_s"] == pytest.approx(want["duration_s"], abs=1.0)
