"""`weldmon run` as a subprocess for the end-to-end tests, and the config it is started with.

The daemon records from a PulseAudio null sink (`tests/support/pulse.py`) and publishes to a
real Mosquitto (`tests/support/broker.py`); its JSON log lines go to a file the test polls.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.broker import MosquittoBroker
from tests.support.shifts import RATE_HZ

STOP_LIMIT_S = 10.0  # issue 5: exit within 10 s of SIGTERM
LOG_POLL_S = 0.1  # how often a wait re-reads the log file
TAIL_CHARS = 4000  # log characters shown in a failure message
REPO_ROOT = Path(__file__).resolve().parents[2]  # cwd of the daemon, so `weldmon` imports


class WeldmonRun:
    """`weldmon run --config CONFIG` as a subprocess, its stderr (JSON log lines) in a file.

    Args:
        config: the monitor YAML (`write_monitor_config`).
        env: the process environment, usually ``PulseAudio.subprocess_env()`` plus extras
            such as ``NOTIFY_SOCKET``; output is made unbuffered so the log is current.
        log_path: where stderr is written.
        python: the interpreter (another venv's, e.g. the torch-free base install's).
        nofile: the daemon's open-file limit (RLIMIT_NOFILE soft and hard), e.g. to show that
            exhausting one part (HTTP) leaves enough descriptors for the others.
        wrapper: a command the daemon runs under (e.g. strace); signals go to the daemon,
            its child.
    """

    def __init__(
        self,
        config: Path,
        env: Mapping[str, str],
        log_path: Path,
        python: Path | str = sys.executable,
        nofile: int | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.log_path = log_path
        self._log_file = log_path.open("wb")

        def limit_files() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self._wrapped = bool(wrapper)
        self.proc = subprocess.Popen(
            [*wrapper, str(python), "-m", "weldmon.cli", "run", "--config", str(config)],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            cwd=REPO_ROOT,
            preexec_fn=limit_files if nofile is not None else None,
        )

    def text(self) -> str:
        """Everything the daemon has logged so far."""
        return self.log_path.read_text(errors="replace")

    log = text

    def tail(self) -> str:
        """The end of the log, for failure messages."""
        return self.text()[-TAIL_CHARS:]

    def events(self, name: str) -> list[dict]:
        """Log records whose `event` is `name`, in order."""
        out = []
        for line in self.text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a library's plain line
            if isinstance(record, dict) and record.get("event") == name:
                out.append(record)
        return out

    def wait_for_log(self, name: str, timeout: float, count: int = 1) -> list[dict]:
        """The `name` records once at least `count` were logged; fails if the daemon exits or
        `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while len(found := self.events(name)) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)}/{count} {name} after {timeout} s:\n{self.tail()}")
            time.sleep(LOG_POLL_S)
        return found

    @property
    def pid(self) -> int:
        """The daemon's process id (the wrapper's child when there is a wrapper)."""
        if not self._wrapped:
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def stop(self, limit_s: float = STOP_LIMIT_S) -> int:
        """SIGTERM; the exit code. Killed (and `TimeoutExpired` raised) after `limit_s`."""
        try:
            if self.proc.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
            return self.proc.wait(limit_s)
        finally:
            self.kill()

    def threads(self) -> int:
        """Threads of the daemon process now (Linux /proc)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Threads:")))

    def open_fds(self) -> int:
        """Open file descriptors of the daemon process now (Linux /proc)."""
        return len(list(Path(f"/proc/{self.pid}/fd").iterdir()))

    def kill(self) -> None:
        """SIGKILL if still running (no cleanup of any kind in the daemon); closes the log."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


def _deep_merge(base: dict, override: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def write_monitor_config(
    folder: Path, model: Path, broker: MosquittoBroker, **sections: Mapping[str, Any]
) -> Path:
    """Write ``folder/monitor.yaml`` and return its path: a common base (the model, the
    ``pulse`` device at the model's rate for station ``cell1``, the broker, ``folder/state``,
    JSON logs, HTTP on any free port) with each section in `sections` deep-merged over it."""
    state = folder / "state"
    state.mkdir(parents=True, exist_ok=True)
    base = {
        "model": {"path": str(model)},
        "audio": {"device": "pulse", "samplerate": RATE_HZ, "stations": ["cell1"]},
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": f"wm-{folder.name}"},
        "http": {"port": 0},  # any free port; the daemon logs the one it got
        "state_dir": str(state),
        "logging": {"level": "info", "format": "json"},
    }
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump(_deep_merge(base, sections)))
    return path
