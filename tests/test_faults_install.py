"""What an operator installs must agree with itself: the README, docs/operations.md, the example
config, the systemd units and the built package. Checked on the real files: the units, the
example, a wheel built from this checkout, a state directory on disk.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from monitor.config import ConfigError, example_config_text, load_config, parse_config
from tests.test_systemd_units import SINGLE, TEMPLATE, parse_unit

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "configs" / "monitor.example.yaml"
# After the daemon's stop budget, the interpreter's own exit (threads joined, torch unloaded)
# takes up to ~2 s on a loaded box; keep one more second spare.
EXIT_MARGIN_S = 3.0
WHEEL_TIMEOUT_S = 300.0
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value)
    assert match, f"unexpected systemd time span {value!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_readme_installs_the_config_where_the_unit_reads_it() -> None:
    exec_start = parse_unit(SINGLE)["Service"]["ExecStart"][0]
    (unit_path,) = re.findall(r"--config (\S+)", exec_start)
    for doc in ("README.md", "docs/operations.md", "systemd/README.md"):
        named = set(re.findall(r"/etc/weldmon/[a-z0-9_-]+\.yaml", (REPO / doc).read_text()))
        named -= {"/etc/weldmon/cell1.yaml", "/etc/weldmon/cell2.yaml"}  # template instances
        assert named == {unit_path}, f"{doc} names {sorted(named)}, the unit reads {unit_path}"


@pytest.mark.parametrize("unit", [SINGLE, TEMPLATE], ids=lambda p: p.name)
def test_no_allowed_stop_timeout_outlasts_the_units_kill(unit: Path, tmp_path: Path) -> None:
    kill_after = _seconds(parse_unit(unit)["Service"]["TimeoutStopSec"][0])
    base = {"model": {"path": str(tmp_path / "m.pt")}, "state_dir": str(tmp_path)}
    too_long = kill_after - EXIT_MARGIN_S + 0.5
    with pytest.raises(ConfigError, match="stop_timeout_s"):
        parse_config({**base, "stop_timeout_s": too_long}, check_files=False)
    default = parse_config(base, check_files=False).stop_timeout_s
    assert default + EXIT_MARGIN_S <= kill_after


def test_the_example_keeps_the_model_in_the_read_only_models_folder() -> None:
    cfg = load_config(EXAMPLE, check_files=False)
    layout = (REPO / "docs" / "operations.md").read_text()
    (models,) = re.findall(
        r"`(/opt/weldmon/models)/<name>\.onnx`[^|]*\| deploy artifacts, kept read-only", layout
    )
    assert cfg.model.path.parent == Path(models)
    assert not cfg.model.path.is_relative_to(cfg.state_dir), "the service may write state_dir"


def test_the_built_wheel_carries_the_example_config(tmp_path: Path) -> None:
    # Build from a copy: the build writes build/ and *.egg-info next to the sources.
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"),
    )
    out = tmp_path / "wheel"
    subprocess.run(
        [*PIP_WHEEL, "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=WHEEL_TIMEOUT_S,
    )
    (wheel,) = out.glob("weldmon-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("monitor/monitor.example.yaml")
    assert shipped == EXAMPLE.read_bytes()
    assert example_config_text().encode() == shipped


def _config(tmp_path: Path, state_dir: Path) -> Path:
    model = tmp_path / "model.pt"
    model.write_bytes(b"not loaded by load_config")
    path = tmp_path / "monitor.yaml"
    path.write_text(f"model:\n  path: {model}\nstate_dir: {state_dir}\n")
    return path


def test_a_missing_state_dir_is_created_private_like_systemds_state_directory(
    tmp_path: Path,
) -> None:
    state = tmp_path / "var-lib" / "weldmon"
    state.parent.mkdir()
    cfg = load_config(_config(tmp_path, state))
    assert cfg.state_dir == state and state.is_dir()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_a_state_dir_whose_parent_is_missing_is_refused_naming_both(tmp_path: Path) -> None:
    state = tmp_path / "no-such-parent" / "weldmon"
    with pytest.raises(ConfigError, match=r"state_dir: no such directory .*nor its parent"):
        load_config(_config(tmp_path, state))
    assert not state.parent.exists()
