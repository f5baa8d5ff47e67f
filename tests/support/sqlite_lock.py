"""Another process holding a SQLite file's write lock: a stand-in for a full, read-only or
failing disk under the outbox (every write fails after the busy timeout; WAL reads work).

The holder is a real second process with its own connection in ``BEGIN EXCLUSIVE``; it
keeps the lock until `release` closes its stdin, so a test releases it at an exact point
instead of sleeping.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import TracebackType

LOCKED_LINE = "locked"
START_TIMEOUT_S = 30.0

_HOLDER = f"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
db.execute("BEGIN EXCLUSIVE")
print({LOCKED_LINE!r}, flush=True)
sys.stdin.read()  # until the test closes our stdin
db.execute("ROLLBACK")
"""


class SqliteLock:
    """``BEGIN EXCLUSIVE`` on `path`, held by a child process from construction to `release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != LOCKED_LINE:
            self.release()
            raise RuntimeError(f"could not lock {path}: {line!r}")

    def release(self) -> None:
        """Roll back and exit; the file is writable again when this returns."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> SqliteLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
