"""Config reporting as a new user meets it: `weldmon run --config FILE` on real files must name
every problem at once (schema and files together), refuse a key given twice naming it and
its lines, and say which keys an empty file lacks; exit code 2, message on stderr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config import ConfigError, load_config
from tests.support.daemon import REPO_ROOT

CLI_TIMEOUT_S = 120.0


def run_cli(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )


def test_schema_errors_and_file_errors_are_reported_together(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"model:\n  path: {tmp_path / 'missing.pt'}\n"
        f"state_dir: {tmp_path / 'no-parent' / 'state'}\n"
        "mqtt:\n  port: 70000\n"
    )
    done = run_cli(config)
    assert done.returncode == 2
    assert done.stdout == ""
    for expected in (
        "mqtt.port: Input should be less than or equal to 65535",
        "model.path: no such file",
        "state_dir: no such directory",
    ):
        assert expected in done.stderr, done.stderr


def test_a_key_given_twice_is_an_error_naming_the_key_and_both_lines(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"model:\n  path: {model}\n"  # lines 1-2
        f"state_dir: {tmp_path}\n"  # line 3
        "mqtt:\n"  # line 4
        "  port: 1883\n"  # line 5
        "  host: a\n"  # line 6
        "  port: 1884\n"  # line 7
        f"state_dir: {tmp_path}\n"  # line 8
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert "port: duplicate key at line 7 (first at line 5)" in message
    assert "state_dir: duplicate key at line 8 (first at line 3)" in message
    done = run_cli(config)
    assert done.returncode == 2 and "duplicate key at line 7" in done.stderr


def test_an_empty_file_names_the_required_keys(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text("# nothing configured yet\n")
    done = run_cli(config)
    assert done.returncode == 2
    assert "NoneType" not in done.stderr
    assert "model: Field required" in done.stderr
    assert "state_dir: Field required" in done.stderr
