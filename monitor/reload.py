"""Model reload without a restart: SIGHUP or a message on ``{prefix}/cmd/reload``.

A reload re-reads the config file, loads the model it names, checks the pinned sha256 and
runs `DeployModel.self_test` (all on a worker thread: audio keeps flowing), then hands the
result to the daemon, which swaps the model *between welds*: welds already in progress
finish with the old model (their result says so in ``model_sha256``), welds that start
afterwards use the new one. A reload that fails at any step keeps the old model and is
reported as an ``error`` event (``code: reload_failed``).

Only the ``model`` and ``clips`` sections take effect on reload; a change to any other
section is named in a warning (``reload_needs_restart``) and waits for the next restart,
because those sections shape threads, sockets and devices that live for the whole process.

Requests never pile up: one reload runs at a time, and requests that arrive meanwhile are
merged into one more run after it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploy.errors import WeldmonError
from deploy.loader import DeployModel
from monitor.config import MonitorConfig, load_config
from monitor.events import MalformedMessageError
from monitor.runtime import load_model

RELOAD_WORD = b"reload"
MAX_COMMAND_PAYLOAD_BYTES = 1024  # a command is a word or a tiny JSON object
APPLIED_SECTIONS = ("model", "clips")  # sections a reload takes over; the rest need a restart

log = structlog.get_logger(__name__)


class ReloadError(WeldmonError):
    """The reload was refused; the old model stays."""


def reload_topic(prefix: str) -> str:
    """The command topic that asks for a reload."""
    return f"{prefix}/cmd/reload"


class ReloadCommand(BaseModel):
    """``{prefix}/cmd/reload`` payload: empty, the word ``reload``, or a JSON object with an
    optional ``request_id`` echoed in the log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str | None = Field(None, min_length=1, max_length=128)


def parse_reload_command(payload: bytes) -> ReloadCommand:
    """Parse a reload command; raises MalformedMessageError for anything else."""
    if len(payload) > MAX_COMMAND_PAYLOAD_BYTES:
        raise MalformedMessageError(f"command payload longer than {MAX_COMMAND_PAYLOAD_BYTES} B")
    text = payload.strip()
    if not text or text == RELOAD_WORD:
        return ReloadCommand()
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessageError(f"not 'reload' or a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedMessageError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return ReloadCommand.model_validate(data)
    except ValidationError as exc:
        raise MalformedMessageError(f"bad reload command: {exc.errors()[0]['msg']}") from exc


@dataclass(frozen=True)
class ReloadPlan:
    """A loaded, pin-checked, self-tested model and the config it came from."""

    cfg: MonitorConfig  # the running config with the applied sections replaced
    model: DeployModel
    needs_restart: tuple[str, ...]  # sections that changed but are not applied


def changed_sections(old: MonitorConfig, new: MonitorConfig) -> list[str]:
    """Top-level config keys whose values differ."""
    a, b = old.model_dump(), new.model_dump()
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def prepare_reload(
    config_path: Path | None, current: MonitorConfig, current_model: DeployModel
) -> ReloadPlan:
    """Blocking (run it on a thread): read the config, load, pin-check and self-test the
    model; ReloadError says why it cannot be used."""
    try:
        fresh = load_config(config_path) if config_path is not None else current
        model = load_model(fresh)
    except WeldmonError as exc:
        raise ReloadError(str(exc)) from exc
    if (model.sample_rate, model.chunk_samples) != (
        current_model.sample_rate,
        current_model.chunk_samples,
    ):
        raise ReloadError(
            f"model.path: {model.path} takes {model.chunk_samples} samples at "
            f"{model.sample_rate} Hz, the running model {current_model.chunk_samples} at "
            f"{current_model.sample_rate} Hz; that change needs a restart"
        )
    changed = changed_sections(current, fresh)
    applied = current.model_copy(update={k: getattr(fresh, k) for k in APPLIED_SECTIONS})
    return ReloadPlan(applied, model, tuple(k for k in changed if k not in APPLIED_SECTIONS))


class Reloader:
    """Runs reloads one at a time on the event loop; merges requests that arrive meanwhile.

    `prepare` builds a plan on a worker thread; `apply` swaps it in (event loop); `failed`
    reports a refused reload (event loop). All three belong to the daemon.
    """

    def __init__(
        self,
        prepare: Callable[[], ReloadPlan],
        apply: Callable[[ReloadPlan], Awaitable[None]],
        failed: Callable[[str], None],
    ) -> None:
        self._prepare = prepare
        self._apply = apply
        self._failed = failed
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.requested = 0
        self.succeeded = 0
        self.failures = 0

    def request(self, origin: str) -> None:
        """Ask for a reload (event loop thread: signal handler, MQTT message)."""
        self.requested += 1
        log.info("reload_requested", origin=origin)
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="weldmon-reload")

    @property
    def busy(self) -> bool:
        """Whether a reload is running."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                plan = await asyncio.to_thread(self._prepare)
                await self._apply(plan)
            except Exception as exc:  # a reload must never take the running daemon down
                self.failures += 1
                message = str(exc) if isinstance(exc, ReloadError) else repr(exc)
                log.error("reload_failed", error=message)
                self._failed(message)
            else:
                self.succeeded += 1
            if not self._again:
                return

    async def close(self) -> None:
        """Wait for a running reload to finish (shutdown)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
