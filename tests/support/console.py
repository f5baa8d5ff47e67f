"""`weldmon console` as a subprocess, and Debian's Chromium driven by Playwright.

The console prints ``weldmon console: serving http://HOST:PORT/`` on stderr once it listens
(``--listen 127.0.0.1:0`` picks a free port). Chromium comes from apt (scripts/system-deps.sh):
Playwright's own browser download is unreachable here. Locally a missing chromium or
playwright skips the browser tests; with CI=true it fails them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.broker import MosquittoBroker

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
START_TIMEOUT_S = 60.0  # imports (starlette, pydantic, aiomqtt) on a loaded 2-core box
STOP_TIMEOUT_S = 10.0
_SERVING = re.compile(r"serving (https?://\S+?)/? ")


class ConsoleRun:
    """`weldmon console ...` as a subprocess; ``url`` once it serves."""

    def __init__(self, args: Sequence[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self._lines: list[str] = []
        self._serving = threading.Event()
        self.url: str | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "weldmon.cli", "console", *args],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.append(line)
            self._log.write(line)
            self._log.flush()
            found = _SERVING.search(line)
            if found and self.url is None:
                self.url = found.group(1).rstrip("/")
                self._serving.set()
        self._serving.set()  # exited: wake a waiter

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> str:
        """The base URL (no trailing '/'); fails if the console exits or times out."""
        if not self._serving.wait(timeout) or self.url is None:
            raise AssertionError(f"console did not serve (rc {self.proc.poll()}):\n{self.text()}")
        return self.url

    def text(self) -> str:
        return "".join(self._lines)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def stop(self) -> int:
        """SIGTERM and the exit code (killed after STOP_TIMEOUT_S)."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            return self.wait_exit()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(STOP_TIMEOUT_S)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self._log.close()

    def rss_kib(self) -> int:
        """Resident memory of the console process (VmRSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def stream_until(url: str, text: str, timeout: float = 10.0) -> str:
    """Follow the console's live stream (``/events``) until a fragment contains ``text``;
    returns that fragment's data line. The stream opens with a snapshot of everything, so a
    condition already true returns at once. Raises TimeoutError."""
    import httpx

    deadline = time.monotonic() + timeout
    try:
        with httpx.stream("GET", f"{url}/events", timeout=timeout) as response:
            for line in response.iter_lines():
                if line.startswith("data:") and text in line:
                    return line
                if time.monotonic() > deadline:
                    break
    except httpx.ReadTimeout:
        pass
    raise TimeoutError(f"{text!r} not in the console's live stream within {timeout} s")


# Set to a folder to save screenshots of the pages there (docs/console.md's are made so:
# WELDMON_CONSOLE_SCREENSHOTS=docs/img pytest tests/test_console_browser.py ...).
SCREENSHOTS = os.environ.get("WELDMON_CONSOLE_SCREENSHOTS")


def save_screenshot(page: object, name: str) -> None:
    """``console-<name>.png`` in $WELDMON_CONSOLE_SCREENSHOTS, if set (256 colours: small)."""
    if not SCREENSHOTS:
        return
    from PIL import Image  # matplotlib's dependency

    path = Path(SCREENSHOTS) / f"console-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def console_args(
    broker: MosquittoBroker, db: Path, *extra: str, prefixes: Sequence[str] = ("weldmon",)
) -> list[str]:
    """The common command line: this broker, a free loopback port, ``db``."""
    args = ["--broker", f"{broker.host}:{broker.port}", "--listen", "127.0.0.1:0", "--db", str(db)]
    for prefix in prefixes:
        args += ["--prefix", prefix]
    return [*args, *extra]


def _browser_missing() -> str | None:
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} not found (apt-get install chromium; scripts/system-deps.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed (the dev extra)"
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Debian's Chromium under Playwright, one per test module (pages are per test).

    Not one per session: Playwright's sync API keeps an event loop running in the main
    thread while it is started, and later modules' ``asyncio.run`` would refuse to start."""
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}; CI=true: browser tests are required")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def console_run(tmp_path: Path) -> Iterator:
    """Factory: ``console_run(args)`` -> a started :class:`ConsoleRun`; all are stopped
    after the test."""
    started: list[ConsoleRun] = []

    def start(args: Sequence[str]) -> ConsoleRun:
        run = ConsoleRun(args, tmp_path / f"console-{len(started)}.log")
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()
