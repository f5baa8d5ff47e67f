"""Promote the shadow model to production, or roll back to the previous one, while running:
``{prefix}/cmd/promote`` / ``{prefix}/cmd/rollback`` (the broker's ACL says who may send
them, as for ``cmd/reload``), ``weldmon model promote|rollback --daemon`` and the console's
promote button all arrive here.

A promote, one change at a time and never beside a running reload:

1. refused unless a shadow model is in service (and is the one the command's
   ``expect_sha256`` names);
2. the new config is written beside the old one: ``model`` = the shadow's file pinned to its
   sha256, ``shadow`` = null, every other line as it was (`monitor.config_edit`); a folder
   that cannot be written (a read-only /etc) refuses the change here, nothing changed;
3. a reload is prepared from it (`monitor.reload.prepare_reload`: load, pin check, self
   test, same windows) off the event loop; if that fails the new file is discarded and the
   running models stay;
4. the new config is renamed over the old one (atomic), and the previous production model
   (path and sha256) is recorded in ``state_dir/model_history.json`` for a one-step rollback;
5. the swap happens between welds, as a reload's (`monitor.reload.swap_in`): welds in
   progress finish on the old model, welds that start afterwards use the new one;
6. every outcome, applied or refused, is a ``model_change`` event (through the outbox) and a
   line of ``state_dir/model_audit.jsonl``: who, when, sha256 before and after, the daemon's
   own comparison of the shadow against production and the figures the command carried.

A rollback is the same with ``model`` = the recorded previous model (pinned) and the shadow
section left as it is; the record is consumed, so a second rollback is refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from deploy.errors import WeldmonError
from monitor.config_edit import (
    ConfigWriteError,
    commit,
    discard,
    stage,
    with_section,
    write_atomically,
)
from monitor.events.shadow import ModelAction, ModelChange, ModelCommand
from monitor.reload import ModelHost, Reloader, ReloadError, prepare_reload, swap_in
from weldmon import __version__

HISTORY_FILE = "model_history.json"  # in state_dir: the previous production model
AUDIT_FILE = "model_audit.jsonl"  # in state_dir: one line per promote / rollback request

log = structlog.get_logger(__name__)


class ChangeRefusedError(WeldmonError):
    """A promote or rollback cannot be done; the running models and the files stay."""


@dataclass(frozen=True)
class PreviousModel:
    """The production model before the last promote: what a rollback restores."""

    path: str
    sha256: str


class LifecycleHost(ModelHost, Protocol):
    """The daemon, as a promote sees it."""

    config_path: Path | None
    reloader: Reloader


class ModelLifecycle:
    """Runs promote / rollback requests one at a time (event loop); `publish` gets every
    outcome as a `ModelChange`."""

    def __init__(self, host: LifecycleHost, publish: Callable[[ModelChange], None]) -> None:
        self.host = host
        self.publish = publish
        self._task: asyncio.Task[None] | None = None
        self.applied = 0
        self.refused = 0

    @property
    def busy(self) -> bool:
        """Whether a change is under way."""
        return self._task is not None and not self._task.done()

    def request(self, action: ModelAction, command: ModelCommand) -> None:
        """Ask for a promote or rollback (event loop: the command router)."""
        log.info("model_change_requested", action=action, by=command.by, id=command.request_id)
        if self.busy:
            self._done(action, command, self.host.model.sha256, "another change is under way")
            return
        self._task = asyncio.get_running_loop().create_task(self._run(action, command))

    async def close(self) -> None:
        """Wait for a change under way (shutdown)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, action: ModelAction, command: ModelCommand) -> None:
        host = self.host
        before = host.model.sha256
        figures = {**self._comparison(), **command.figures}
        try:
            previous = await self._change(action, command)
        except (ChangeRefusedError, ConfigWriteError, ReloadError) as exc:
            self._done(action, command, before, str(exc), figures)
            return
        except Exception as exc:  # a change must never take the running daemon down
            self._done(action, command, before, f"unexpected: {exc!r}", figures)
            return
        self._record_previous(previous)
        self._done(action, command, before, None, figures)

    async def _change(self, action: ModelAction, command: ModelCommand) -> PreviousModel | None:
        """Write the config, prepare and swap; returns what a rollback would restore next."""
        host = self.host
        if host.reloader.busy:
            raise ChangeRefusedError("a model reload is under way; try again after it")
        if host.config_path is None:
            raise ChangeRefusedError("the daemon was started without a config file")
        text = await asyncio.to_thread(_read, host.config_path)
        if action == "promote":
            text, previous = self._promotion(text, command), self._current()
        else:
            text, previous = self._rollback(text), None
        staged = await asyncio.to_thread(stage, host.config_path, text)
        try:
            plan = await asyncio.to_thread(prepare_reload, staged, host.cfg, host.model)
            await asyncio.to_thread(commit, staged, host.config_path)
        finally:
            discard(staged)  # committed: already gone
        await swap_in(host, plan)
        return previous

    def _current(self) -> PreviousModel:
        return PreviousModel(str(self.host.cfg.model.path), self.host.model.sha256)

    def _promotion(self, text: str, command: ModelCommand) -> str:
        host = self.host
        shadow, section = host.shadow_model, host.cfg.shadow
        if shadow is None or section is None:
            raise ChangeRefusedError("no shadow model is in service: nothing to promote")
        if command.expect_sha256 is not None and command.expect_sha256 != shadow.sha256:
            raise ChangeRefusedError(
                f"the shadow model in service is {shadow.sha256}, not {command.expect_sha256}"
            )
        text = with_section(text, "model", {"path": str(section.path), "sha256": shadow.sha256})
        return with_section(text, "shadow", None)

    def _rollback(self, text: str) -> str:
        previous = self._previous()
        if previous is None:
            raise ChangeRefusedError("no previous model is recorded: nothing to roll back to")
        return with_section(text, "model", {"path": previous.path, "sha256": previous.sha256})

    def _history_path(self) -> Path:
        return self.host.cfg.state_dir / HISTORY_FILE

    def _previous(self) -> PreviousModel | None:
        try:
            data = json.loads(self._history_path().read_text())
            found = data.get("previous")
            return PreviousModel(found["path"], found["sha256"]) if found else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ChangeRefusedError(f"{self._history_path()}: unreadable ({exc})") from exc

    def _record_previous(self, previous: PreviousModel | None) -> None:
        data = {"previous": previous.__dict__ if previous is not None else None}
        try:
            write_atomically(self._history_path(), json.dumps(data) + "\n")
        except ConfigWriteError as exc:  # the change stands; only the next rollback is lost
            log.error("model_history_unwritable", path=str(self._history_path()), error=str(exc))

    def _comparison(self) -> dict[str, Any]:
        return {f"daemon_{k}": v for k, v in self.host.shadow.comparison.figures().items()}

    def _done(
        self,
        action: ModelAction,
        command: ModelCommand,
        before: str,
        refused: str | None,
        figures: dict[str, Any] | None = None,
    ) -> None:
        host = self.host
        change = ModelChange(
            daemon_version=__version__,
            **host.options.model.event_fields(),
            action=action,
            outcome="refused" if refused else "applied",
            reason=refused,
            request_id=command.request_id,
            by=command.by,
            sha256_before=before,
            sha256_after=host.model.sha256,
            path_after=str(host.cfg.model.path),
            shadow_sha256_after=host.shadow.sha256,
            figures=figures or {},
        )
        if refused:
            self.refused += 1
            log.error("model_change_refused", action=action, by=command.by, reason=refused)
        else:
            self.applied += 1
            log.info("model_changed", action=action, by=command.by, before=before)
        self._audit(change)
        self.publish(change)

    def _audit(self, change: ModelChange) -> None:
        path = self.host.cfg.state_dir / AUDIT_FILE
        try:
            with path.open("a") as out:
                out.write(change.model_dump_json() + "\n")
        except OSError as exc:  # logged with the whole record, so the journal keeps it
            log.error(
                "model_audit_unwritable",
                path=str(path),
                error=str(exc),
                **change.model_dump(mode="json"),
            )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ChangeRefusedError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
