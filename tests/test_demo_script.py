"""`scripts/demo.sh` sets up a venv that runs `weldmon console`, and ends by printing how to
open the console on its shift with options the commands really have."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "scripts" / "demo.sh"


def _demo_extras() -> set[str]:
    match = re.search(r"^bash scripts/venv\.sh (\S+)$", DEMO.read_text(), re.MULTILINE)
    assert match is not None, "demo.sh sets up the venv with scripts/venv.sh EXTRAS"
    return set(match.group(1).split(","))


def test_the_demo_venv_has_the_console_extra() -> None:
    extras = _demo_extras()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "console" in extras and extras <= set(declared["optional-dependencies"])


def _closing_text(tmp_path: Path) -> str:
    """The demo's closing lines, rendered by bash with the demo's own variables."""
    script = DEMO.read_text()
    tail = script[script.index("cat >&2 <<TEXT") :]
    done = subprocess.run(
        ["bash", "-c", f"weldmon=.venv/bin/weldmon\nwork=.weldmon-demo\nmqtt_enabled=true\n{tail}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    return done.stderr


def test_the_demo_ends_with_console_commands_whose_options_exist(tmp_path: Path) -> None:
    text = _closing_text(tmp_path)
    assert "http://127.0.0.1:8080/" in text
    commands = re.findall(r"weldmon (console|replay) (.*?)(?:\n\d\.|\Z)", text, re.DOTALL)
    assert {name for name, _ in commands} == {"console", "replay"}
    for name, args in commands:
        helped = subprocess.run(
            [sys.executable, "-m", "weldmon.cli", name, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert helped.returncode == 0, helped.stderr  # the console extra is installed here
        for option in re.findall(r"(--[a-z-]+)", args):
            assert option in helped.stdout, f"weldmon {name} has no {option}"
