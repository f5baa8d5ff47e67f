"""The shadow model: a candidate artifact that judges the very same windows as production,
after it and never ahead of it, and whose verdicts only ever go to `sink`.

Feed (event loop, from `monitor.pipeline.verdicts`): `started` at a weld's start boundary,
`window` once production's probability of that window is known (so the shadow can never
delay it), `ended` right after the production result was emitted. None of them blocks or
raises: a fault of the shadow is logged and counted, and production goes on untouched.

Ownership: the judge owns its workers (`ShadowWorker`: one thread each, at a lower CPU
priority than production's). A window's samples are only read by the shadow worker after
production's worker is done with them.

Overload: a window is offered to the shadow worker only while its queue has room
(`queue_windows`); otherwise it is skipped and counted (`windows_skipped`) and the weld's
shadow result says ``complete: false``. A stalled or failing shadow: after the production
result, a weld's shadow verdict waits at most `timeout_s` for its windows; the rest are
counted as failed. At most one task per weld waits; production never waits for any of it.

Swap (`use`): welds that start afterwards use the new shadow model (or none); a weld in
progress keeps the one it started with; a retired worker stops after its last weld.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field

import structlog

from deploy.loader import DeployModel
from monitor.events import ThresholdSource, WeldResult
from monitor.events.shadow import ShadowResult
from monitor.pipeline.inference import InferenceWorker
from monitor.pipeline.tracker import TrackerOptions, WeldTracker
from monitor.pipeline.windower import Window

SHADOW_NICE_STEP = 10  # the shadow thread's nice above the process's: production runs first
SHADOW_MAX_BATCH_WINDOWS = 8  # a shadow forward pass stays short, so it yields the CPU often

log = structlog.get_logger(__name__)

ShadowSink = Callable[[ShadowResult], None]


class ShadowWorker(InferenceWorker):
    """An inference worker whose thread runs at a lower CPU priority (Linux: per-thread nice)
    and is named ``weldmon-shadow``."""

    def __init__(self, model: DeployModel, queue_windows: int) -> None:
        super().__init__(model, SHADOW_MAX_BATCH_WINDOWS, queue_windows)
        self._thread.name = "weldmon-shadow"

    def _run(self) -> None:
        try:
            nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + SHADOW_NICE_STEP)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError as exc:  # not fatal: the shadow then competes at production's priority
            log.warning("shadow_priority_unchanged", error=str(exc))
        super()._run()


@dataclass
class ShadowCounters:
    """Monotonic counters of the shadow model (the stats log and metrics)."""

    welds: int = 0  # welds started while a shadow model was loaded
    results: int = 0  # shadow results handed to the sink
    windows: int = 0  # windows handed to the shadow worker
    windows_skipped: int = 0  # not handed over: its queue was full (load) or it had stopped
    windows_failed: int = 0  # its inference raised or did not finish within timeout_s
    faults: int = 0  # an unexpected error inside the shadow path (logged)

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return asdict(self)


@dataclass
class Comparison:
    """The shadow against production on the welds both judged completely, since the current
    shadow model was loaded: what a promotion's audit line records."""

    welds: int = 0  # complete shadow results with both verdicts
    agreed: int = 0
    shadow_defect_only: int = 0  # the shadow says defect, production good
    production_defect_only: int = 0  # production says defect, the shadow good

    def add(self, result: ShadowResult) -> None:
        """Count one shadow result (incomplete ones and missing verdicts are left out)."""
        if not result.complete or result.agree is None:
            return
        self.welds += 1
        self.agreed += int(result.agree)
        self.shadow_defect_only += int(result.label == 1 and result.production_label == 0)
        self.production_defect_only += int(result.label == 0 and result.production_label == 1)

    def figures(self) -> dict[str, float | int | None]:
        """The counts and the agreement share (None before any weld)."""
        share = self.agreed / self.welds if self.welds else None
        return {**asdict(self), "agreement": share}


@dataclass
class _ShadowWeld:
    tracker: WeldTracker
    worker: ShadowWorker
    # by window index: the shadow's future, or None (not judged by production, or skipped)
    futures: list[Future[float] | None] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # each window's end sample
    skipped: int = 0


class ShadowJudge:
    """The shadow model of one daemon (possibly none loaded): see the module docstring."""

    def __init__(self, sink: ShadowSink, queue_windows: int, timeout_s: float) -> None:
        self.sink = sink
        self.queue_windows = queue_windows
        self.timeout_s = timeout_s
        self.counters = ShadowCounters()
        self.comparison = Comparison()
        self.worker: ShadowWorker | None = None
        self.options: TrackerOptions | None = None
        self._welds: dict[str, _ShadowWeld] = {}
        self._users: dict[ShadowWorker, int] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._retired_cpu_s = 0.0  # CPU seconds of the stopped workers

    @property
    def sha256(self) -> str | None:
        """The shadow model's sha256 (None: no shadow model)."""
        return self.options.model.sha256 if self.options is not None else None

    @property
    def cpu_s(self) -> float:
        """CPU seconds every shadow worker thread of this daemon has used (monotonic)."""
        live = {*self._users, *([self.worker] if self.worker is not None else [])}
        return self._retired_cpu_s + sum(w.counters.cpu_s for w in live)

    def use(
        self,
        model: DeployModel | None,
        options: TrackerOptions | None,
        queue_windows: int | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Judge welds that start from now on with `model` (None: no shadow); welds in
        progress finish with the shadow they started with. Event loop."""
        if queue_windows is not None:
            self.queue_windows = queue_windows
        if timeout_s is not None:
            self.timeout_s = timeout_s
        old, old_sha = self.worker, self.sha256
        if model is None or options is None:
            self.worker, self.options = None, None
        else:
            self.worker = ShadowWorker(model, self.queue_windows)
            self.worker.start()
            self.options = options
        if self.sha256 != old_sha:
            self.comparison = Comparison()  # figures belong to one candidate
        if old is not None and not self._users.get(old):
            self._retire(old)

    # -- the feed (called by the verdict queue; never raises) ---------------------------------

    def started(self, tracker: WeldTracker) -> None:
        """A weld began: it is judged by the shadow model loaded now, if any."""
        if self.worker is None or self.options is None:
            return
        try:
            twin = WeldTracker(
                self.options,
                tracker.station,
                tracker.source,
                tracker.start_index,
                tracker.epoch_utc,
                weld_id=tracker.weld_id,
                context=tracker.context,
            )
        except Exception as exc:  # a shadow fault never reaches production
            self._fault("started", exc)
            return
        self._welds[tracker.weld_id] = _ShadowWeld(twin, self.worker)
        self._users[self.worker] = self._users.get(self.worker, 0) + 1
        self.counters.welds += 1

    def window(self, tracker: WeldTracker, window: Window, judged_by_production: bool) -> None:
        """Production has judged `window` (or left it out: `judged_by_production` false);
        hand it to the shadow worker if it has room, else skip and count it."""
        weld = self._welds.get(tracker.weld_id)
        if weld is None:
            return
        future: Future[float] | None = None
        if judged_by_production:
            if weld.worker.queue_depth >= self.queue_windows:
                self.counters.windows_skipped += 1
                weld.skipped += 1
            else:
                try:
                    future = weld.worker.submit(window.samples)
                    self.counters.windows += 1
                except Exception as exc:  # overload or a stopped worker: skipped, counted
                    self.counters.windows_skipped += 1
                    weld.skipped += 1
                    log.debug("shadow_window_skipped", weld_id=tracker.weld_id, error=str(exc))
        else:
            weld.tracker.not_finite.add(window.index)  # left out by production: out here too
        weld.futures.append(future)
        weld.ends.append(window.end)

    def ended(self, tracker: WeldTracker, result: WeldResult, end_index: int) -> None:
        """The production result of a weld was emitted: finish its shadow verdict on a task of
        its own (it waits for the shadow's windows, production does not)."""
        weld = self._welds.pop(tracker.weld_id, None)
        if weld is None:
            return
        task = asyncio.get_running_loop().create_task(self._finish(weld, result, end_index))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for the shadow verdicts under way (each bounded by `timeout_s`), then stop
        every worker (shutdown)."""
        while self._tasks:  # a finished verdict may retire a worker: one more task
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for weld in self._welds.values():  # never ended: the pipeline closed without a result
            self._release(weld.worker)
        self._welds.clear()
        while self._tasks:  # the workers those releases retired
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        workers = {*self._users, *([self.worker] if self.worker is not None else [])}
        self._users.clear()
        self.worker = None
        for worker in workers:
            await self._stop(worker)

    # -- internals -----------------------------------------------------------------------------

    async def _finish(self, weld: _ShadowWeld, result: WeldResult, end_index: int) -> None:
        try:
            failed = await self._collect(weld)
            shadow = weld.tracker.result(end_index, result.end_reason)
            verdict = _shadow_result(shadow, result, weld.skipped, failed)
            self.counters.results += 1
            if verdict.model_sha256 == self.sha256:  # not a weld of a replaced candidate
                self.comparison.add(verdict)
            self.sink(verdict)
        except Exception as exc:  # a shadow fault never reaches production
            self._fault("result", exc)
        finally:
            self._release(weld.worker)

    async def _collect(self, weld: _ShadowWeld) -> int:
        """Feed the shadow's probabilities into its tracker in window order; returns how many
        windows failed or timed out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        failed = 0
        for index, (future, end) in enumerate(zip(weld.futures, weld.ends, strict=True)):
            prob: float | None = None
            if future is not None:
                try:
                    wait_s = max(0.0, deadline - loop.time())
                    prob = await asyncio.wait_for(asyncio.wrap_future(future), wait_s)
                except Exception as exc:  # raised or timed out: this window is not judged
                    failed += 1
                    self.counters.windows_failed += 1
                    future.cancel()
                    log.debug("shadow_window_failed", weld_id=weld.tracker.weld_id, error=repr(exc))
            else:
                weld.tracker.not_finite.add(index)  # skipped: not a failure of the model
            weld.tracker.add_window(index, prob, end, progress=False)  # alerts: never used
        return failed

    def _release(self, worker: ShadowWorker) -> None:
        left = self._users.get(worker, 0) - 1
        if left > 0:
            self._users[worker] = left
            return
        self._users.pop(worker, None)
        if worker is not self.worker:
            self._retire(worker)

    def _retire(self, worker: ShadowWorker) -> None:
        task = asyncio.get_running_loop().create_task(self._stop(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop(self, worker: ShadowWorker) -> None:
        await asyncio.to_thread(worker.stop)
        self._retired_cpu_s += worker.counters.cpu_s
        log.info("shadow_model_released", windows=worker.counters.windows)

    def _fault(self, where: str, exc: Exception) -> None:
        self.counters.faults += 1
        log.error("shadow_fault", where=where, error=repr(exc))


def _shadow_result(
    shadow: WeldResult, production: WeldResult, skipped: int, failed: int
) -> ShadowResult:
    both = shadow.judged and production.judged
    return ShadowResult(
        daemon_version=shadow.daemon_version,
        model_sha256=shadow.model_sha256,
        model_name=shadow.model_name,
        model_version=shadow.model_version,
        replay=production.replay,
        station=production.station,
        weld_id=production.weld_id,
        source=production.source,
        threshold_source=ThresholdSource.ARTIFACT,
        started_at=shadow.started_at,
        ended_at=shadow.ended_at,
        duration_s=shadow.duration_s,
        end_reason=production.end_reason,
        label=shadow.label,
        label_name=shadow.label_name,
        judged=shadow.judged,
        p_defect=shadow.p_defect,
        threshold=shadow.threshold,
        n_windows=shadow.n_windows,
        window_p_max=shadow.window_p_max,
        windows_skipped=skipped,
        windows_failed=failed,
        complete=skipped == 0 and failed == 0,
        production_model_sha256=production.model_sha256,
        production_label=production.label,
        production_p_defect=production.p_defect,
        production_judged=production.judged,
        agree=(shadow.label == production.label) if both else None,
    )
