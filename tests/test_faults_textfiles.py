"""Config, credentials and auth files that are not UTF-8 text (issue 22), fed to every
command that reads one, each CLI a subprocess: a Latin-1 comment or a NUL byte is a bad
input (exit 2, the file, line, column and byte named), never a traceback with exit 1, which
systemd would restart in a loop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import REPO_ROOT

CLI_TIMEOUT_S = 120.0
LATIN1 = "# für Halle 3\nstate_dir: /tmp\n".encode("latin-1")  # ü is the single byte fc
WITH_NUL = b"state_dir: /tmp\nmodel:\n  path: a\x00b\n"


def weldmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )


COMMANDS = {
    "run": lambda f, tmp: ("run", "--config", f),
    "config check": lambda f, tmp: ("config", "check", f),
    "clips list": lambda f, tmp: ("clips", "list", "--config", f),
    "train": lambda f, tmp: ("train", "--config", f, "--run-dir", str(tmp / "run")),
    "console --config": lambda f, tmp: ("console", "--config", f, "--db", str(tmp / "c.db")),
    "console --auth-file": lambda f, tmp: (
        "console",
        "--broker",
        "127.0.0.1:1",
        "--auth-file",
        f,
        "--db",
        str(tmp / "c.db"),
    ),
    "console --password-file": lambda f, tmp: (
        "console",
        "--broker",
        "127.0.0.1:1",
        "--username",
        "u",
        "--password-file",
        f,
        "--db",
        str(tmp / "c.db"),
    ),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_latin1_file_is_refused_naming_line_column_and_byte(command: str, tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(LATIN1)
    bad.chmod(0o600)  # an auth file readable by others is refused for that reason first
    done = weldmon(*COMMANDS[command](str(bad), tmp_path))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"{bad}: not UTF-8 at line 1, column 4 (byte fc); save the file as UTF-8" in (
        done.stderr
    )


@pytest.mark.parametrize("command", ["run", "config check", "console --auth-file"])
def test_a_file_with_a_nul_byte_is_refused_as_not_text(command: str, tmp_path: Path) -> None:
    bad = tmp_path / "nul.yaml"
    bad.write_bytes(WITH_NUL)
    bad.chmod(0o600)
    done = weldmon(*COMMANDS[command](str(bad), tmp_path))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"{bad}: not a text file: NUL byte at line 3, column 10" in done.stderr


def test_a_utf8_file_with_a_bom_and_umlauts_is_read(tmp_path: Path) -> None:
    good = tmp_path / "monitor.yaml"
    good.write_bytes(b"\xef\xbb\xbf" + "# für Halle 3\nstate_dir: /tmp\n".encode())
    done = weldmon("config", "check", str(good))
    assert done.returncode == 2  # model.path is missing: the file itself was read
    assert "model" in done.stderr and "UTF-8" not in done.stderr
