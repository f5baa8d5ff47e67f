"""Model reload without a restart: SIGHUP or a message on ``{prefix}/cmd/reload``.

The request arrives through ``monitor.publish.commands`` (MQTT) or the daemon's signal
handler. A reload re-reads the config file, loads the model it names, checks the pinned sha256 and
runs `DeployModel.self_test` (all on a worker thread: audio keeps flowing), then hands the
result to the daemon, which swaps the model *between welds*: welds already in progress
finish with the old model (their result says so in ``model_sha256``), welds that start
afterwards use the new one. A reload that fails at any step keeps the old model and is
reported as an ``error`` event (``code: reload_failed``).

Only the ``model``, ``shadow`` and ``clips`` sections, and the per-station thresholds in
``audio.stations``, take effect on reload (the thresholds for welds that start afterwards); a
change to any other section is named in a warning (``reload_needs_restart``) and waits for the
next restart, because those sections shape threads, sockets and devices that live for the
whole process.

Requests never pile up: one reload runs at a time, and requests that arrive meanwhile are
merged into one more run after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from deploy.errors import WeldmonError
from deploy.loader import DeployModel
from monitor.config import MonitorConfig, load_config
from monitor.ops.clips import ClipWriter
from monitor.ops.status import DaemonState, Operations
from monitor.pipeline.core import Pipeline
from monitor.pipeline.inference import InferenceWorker, ModelWorkers
from monitor.pipeline.shadow import ShadowJudge
from monitor.pipeline.tracker import ModelInfo, ModelSwapError, TrackerOptions, check_swappable
from monitor.runtime import load_model, load_shadow, shadow_options, tracker_options
from monitor.teach.station import TeachIn

# sections a reload takes over; the rest need a restart
APPLIED_SECTIONS = ("model", "shadow", "clips")

log = structlog.get_logger(__name__)


class ReloadError(WeldmonError):
    """The reload was refused; the old model stays."""


@dataclass(frozen=True)
class ReloadPlan:
    """A loaded, pin-checked, self-tested model and the config it came from."""

    cfg: MonitorConfig  # the running config with the applied sections replaced
    model: DeployModel
    needs_restart: tuple[str, ...]  # sections that changed but are not applied
    shadow: DeployModel | None = None  # the shadow model the config names, loaded and checked


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
        shadow = load_shadow(fresh, model)  # a shadow that cannot judge refuses the reload
    except WeldmonError as exc:
        raise ReloadError(str(exc)) from exc
    try:
        check_swappable(ModelInfo.of(model), ModelInfo.of(current_model))
    except ModelSwapError as exc:
        raise ReloadError(f"model.path: {model.path}: {exc}") from exc
    changed = changed_sections(current, fresh)
    update = {k: getattr(fresh, k) for k in APPLIED_SECTIONS}
    if "audio" in changed and current.audio.without_overrides() == fresh.audio.without_overrides():
        update["audio"] = fresh.audio  # only thresholds changed: the capture stays as it is
        changed.remove("audio")
    applied = current.model_copy(update=update)
    restart = tuple(k for k in changed if k not in APPLIED_SECTIONS)
    return ReloadPlan(applied, model, restart, shadow)


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


class ModelHost(DaemonState, Protocol):
    """What a model swap changes: the daemon's model, its worker and what depends on them."""

    cfg: MonitorConfig
    model: DeployModel
    options: TrackerOptions
    workers: ModelWorkers
    pipeline: Pipeline | None
    clips: ClipWriter | None
    ops: Operations
    shadow: ShadowJudge
    shadow_model: DeployModel | None
    teach: TeachIn

    async def unused(self, worker: InferenceWorker) -> None:
        """Return once no weld started on `worker` waits for its result."""
        ...


async def swap_in(host: ModelHost, plan: ReloadPlan) -> None:
    """Put a prepared plan into service between welds (event loop): welds that start from
    now on use the new model; the old worker stops once its last weld is judged."""
    worker = host.workers.start(plan.model)
    options = tracker_options(plan.cfg, plan.model, host.cfg.segmentation.mode, host.teach)
    if host.pipeline is not None:
        try:
            host.pipeline.use_model(options, worker)
        except ModelSwapError as exc:
            await asyncio.to_thread(worker.stop)
            raise ReloadError(str(exc)) from exc
    old_sha = host.model.sha256
    host.workers.use(worker, host.unused)
    host.model, host.options, host.cfg = plan.model, options, plan.cfg
    host.teach.bind(options.model, plan.cfg.teach_in)  # another model voids it
    _swap_shadow(host, plan)
    if host.clips is not None:
        host.clips.use_config(plan.cfg.clips, plan.cfg.state_dir)
    elif plan.cfg.clips.policy != "none":
        log.warning("reload_needs_restart", sections=["clips"], why="clips were off")
    host.ops.metrics.model(plan.model.sha256)
    if plan.needs_restart:
        log.warning("reload_needs_restart", sections=list(plan.needs_restart))
    welds = host.pipeline.open_welds if host.pipeline is not None else []
    log.info(
        "model_reloaded",
        old_sha256=old_sha,
        new_sha256=plan.model.sha256,
        welds_finishing_on_old_model=welds,
    )
    if host.publisher is not None:
        await host.publisher.announce("online")  # the status names the new model
    host.ops.notifier.status(host.ops.status_line(host))


def _swap_shadow(host: ModelHost, plan: ReloadPlan) -> None:
    """The shadow the reloaded config names (or none) judges the welds that start from now."""
    old = host.shadow.sha256
    new = plan.shadow.sha256 if plan.shadow is not None else None
    if plan.shadow is None or plan.cfg.shadow is None:
        host.shadow.use(None, None)
    else:
        options = shadow_options(plan.cfg, plan.shadow)
        limits = plan.cfg.shadow
        host.shadow.use(plan.shadow, options, limits.queue_windows, limits.timeout_s)
    host.shadow_model = plan.shadow
    if old != new:
        log.info("shadow_model_changed", old_sha256=old, new_sha256=new)
