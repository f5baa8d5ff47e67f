"""A second virtual environment with weldmon's base install only (no extras, so no torch): what
a monitor box gets from `pip install weldmon`.

Built once per checkout and pyproject.toml under the temp folder (pip's cache makes it a
matter of seconds to a minute), then reused by later runs; a lock file keeps two test
processes from building it at once. The project is installed editable, so the venv always
runs this checkout's code.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.data import REPO_ROOT

INSTALL_TIMEOUT_S = 900  # a cold pip cache downloads onnxruntime and numpy (~60 MB)


def _key() -> str:
    blob = (REPO_ROOT / "pyproject.toml").read_bytes() + str(REPO_ROOT).encode()
    blob += sys.version.encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def base_venv_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"weldmon-base-venv-{_key()}"


def _build(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-e", str(REPO_ROOT)],
        check=True,
        timeout=INSTALL_TIMEOUT_S,
        env=env,
    )


def ensure_base_venv() -> Path:
    """The base venv's python, built if missing (or if a previous build did not finish)."""
    venv = base_venv_dir()
    marker = venv / ".weldmon-base-installed"
    lock = venv.with_name(venv.name + ".lock")
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if not marker.is_file():
            _build(venv)
            marker.write_text(json.dumps({"repo": str(REPO_ROOT)}) + "\n")
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def base_python() -> Path:
    """Python of the torch-free base install (built on first use)."""
    try:
        return ensure_base_venv()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"could not build the base-install venv: {exc}")


def run_in_base(python: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python args...` with the base venv's interpreter, in the repository root."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=env,
    )
