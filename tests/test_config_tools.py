"""`weldmon config check` and `weldmon config example`, from the checkout and from a fresh
install of the built wheel (with `weldmon model info`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from deploy.segment.factory import DEFAULT_MODE
from monitor.config import example_config_text
from tests.support.artifacts import export_untrained
from tests.support.data import COMPAT_SHA256

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "configs" / "monitor.example.yaml"
WHEEL_TIMEOUT_S = 600.0  # a wheel build on a loaded 2-core box


def _weldmon(*args: str, cwd: Path = REPO, exe: list[str] | None = None):
    command = exe or [sys.executable, "-m", "weldmon.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_untrained(tmp_path_factory.mktemp("artifact")).path


def test_a_config_that_would_start_checks_ok_and_creates_nothing(
    artifact: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"  # missing: run would create it, check does not
    config = _write(
        tmp_path / "monitor.yaml",
        {"model": {"path": str(artifact)}, "state_dir": str(state), "mqtt": {"enabled": False}},
    )
    done = _weldmon("config", "check", str(config))
    assert done.returncode == 0, done.stderr
    assert f"ok (stations station1; segmentation {DEFAULT_MODE.value};" in done.stdout
    assert not state.exists()


def test_check_reports_every_problem_at_once_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text(
        "model:\n  path: missing.pt\n"
        "audio:\n  channels: 0\n  chanels: 2\n"
        "mqtt:\n  port: 1883\n  port: 1884\n"
        f"state_dir: {tmp_path}\n"
    )
    done = _weldmon("config", "check", str(config))
    assert done.returncode == 2
    err = done.stderr
    assert err.startswith(f"weldmon config check: {config}: invalid configuration:")
    assert "audio.channels: Input should be greater than or equal to 1" in err
    assert "audio.chanels: Extra inputs are not permitted" in err
    assert "port: duplicate key at line 8 (first at line 7)" in err
    assert "model.path: no such file" in err


def test_check_refuses_a_model_the_daemon_would_refuse(artifact: Path, tmp_path: Path) -> None:
    pinned = {"path": str(artifact), "sha256": "0" * 64}
    config = _write(tmp_path / "pin.yaml", {"model": pinned, "state_dir": str(tmp_path)})
    done = _weldmon("config", "check", str(config))
    assert done.returncode == 2 and "model.sha256: pinned 000" in done.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not an artifact")
    config = _write(tmp_path / "junk.yaml", {"model": {"path": str(junk)}, "state_dir": "."})
    done = _weldmon("config", "check", str(config))
    assert done.returncode == 2 and "model.path:" in done.stderr and "junk.pt" in done.stderr
    onnx = {"model": {"path": str(artifact)}, "state_dir": ".", "inference": {"backend": "onnx"}}
    config = _write(tmp_path / "twin.yaml", onnx)  # the .pt has no ONNX twin beside it
    done = _weldmon("config", "check", str(config))
    assert done.returncode == 2 and "inference.backend: onnx needs the ONNX twin" in done.stderr
    stale = tmp_path / "stale" / artifact.name
    stale.parent.mkdir()
    shutil.copy(artifact, stale)
    export_untrained(tmp_path / "other", seed=8, onnx=True)  # a twin of another .pt
    shutil.copy(tmp_path / "other" / artifact.with_suffix(".onnx").name, stale.with_suffix(".onnx"))
    config = _write(tmp_path / "stale.yaml", {"model": {"path": str(stale)}, "state_dir": "."})
    done = _weldmon("config", "check", str(config))
    assert done.returncode == 2 and "was not converted from it" in done.stderr


def test_example_prints_the_documented_example_which_checks_ok_with_a_real_model(
    artifact: Path, tmp_path: Path
) -> None:
    done = _weldmon("config", "example")
    assert done.returncode == 0 and done.stdout == EXAMPLE.read_text() == example_config_text()
    data = yaml.safe_load(done.stdout)
    data["model"]["path"] = str(artifact)
    data["state_dir"] = str(tmp_path)
    config = _write(tmp_path / "from-example.yaml", data)
    assert _weldmon("config", "check", str(config)).returncode == 0


# ---- a fresh install from the wheel --------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with weldmon from a wheel built from this checkout; its
    bin/weldmon. The wheel is installed with --no-deps; the base dependencies come from the
    test environment's site-packages, appended after the new environment's own (a .pth
    line: no network, the same versions the project resolved). weldmon itself is importable
    only from the wheel: the test environment's editable install is a .pth *file* there,
    which a path added this way does not run."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(
        REPO,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"),
    )
    wheels = base / "dist"
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        capture_output=True,
        timeout=WHEEL_TIMEOUT_S,
    )
    (wheel,) = wheels.glob("weldmon-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=WHEEL_TIMEOUT_S,
    )
    shutil.rmtree(src)  # nothing of the checkout is left to import from
    where = subprocess.run(
        [str(python), "-c", "import monitor, deploy; print(monitor.__file__, deploy.__file__)"],
        capture_output=True,
        text=True,
        cwd=base,
        check=True,
    ).stdout
    assert where.count(str(venv)) == 2, where
    return venv / "bin" / "weldmon"


@pytest.mark.slow
def test_config_tools_and_model_info_work_from_the_installed_wheel(
    installed: Path, artifact: Path, compat_artifact: Path, tmp_path: Path
) -> None:
    exe = [str(installed)]
    example = _weldmon("config", "example", cwd=tmp_path, exe=exe)
    assert example.returncode == 0, example.stderr
    assert example.stdout == EXAMPLE.read_text()
    data = yaml.safe_load(example.stdout)
    data["model"]["path"], data["state_dir"] = str(artifact), str(tmp_path)
    good = _write(tmp_path / "good.yaml", data)
    done = _weldmon("config", "check", str(good), cwd=tmp_path, exe=exe)
    assert done.returncode == 0, done.stderr
    data["audio"]["channels"] = 0
    bad = _write(tmp_path / "bad.yaml", data)
    done = _weldmon("config", "check", str(bad), cwd=tmp_path, exe=exe)
    assert done.returncode == 2 and "audio.channels" in done.stderr
    done = _weldmon("model", "info", str(compat_artifact), cwd=tmp_path, exe=exe)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["sha256"] == COMPAT_SHA256 and info["threshold"] == 0.705 and info["legacy"]
