"""The ordered half of the pipeline: from submitted windows to events, in the order they
happened.

The feed side (`monitor.pipeline.core`) puts four kinds of item into one bounded queue: a
weld's start, each window it submitted to the inference worker (with the future of its
probability), how far the segmenter has confirmed the weld's arc (the early alert rests only
on windows inside it), and a weld's end. One consumer task takes them in order, awaits each window's
probability, feeds the weld's tracker and emits what it returns, so a result is emitted only
after every window before it was judged. Overload: the queue holds at most `max_in_flight`
items; beyond that the feed side waits (back-pressure to the source).

It also counts, per inference worker, the welds started on it whose result is not out yet,
so a worker retired by a model reload is stopped only once its last weld is judged.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal, Protocol, Self

import numpy as np
import structlog

from monitor.events import EndReason, Event, WeldResult
from monitor.pipeline.inference import InferenceWorker
from monitor.pipeline.tracker import WeldTracker
from monitor.pipeline.weld_facts import WeldFacts
from monitor.pipeline.windower import WeldWindower, Window

log = structlog.get_logger(__name__)

EventSink = Callable[[Event], None]
# (result, the weld's audio [start, end) at the model rate, its judged window probabilities)
# -> the result to emit (e.g. with clip_path set). Called on the event loop: must not block.
WeldAudioHook = Callable[[WeldResult, np.ndarray, list[float]], WeldResult]
# Seconds from a window's submission to its probability; called on the inference thread.
WindowLatencyHook = Callable[[float], None]


class WeldObserver(Protocol):
    """Sees every weld after production (the shadow model, `monitor.pipeline.shadow`): called
    on the event loop, in order, must neither block nor raise."""

    def started(self, tracker: WeldTracker) -> None:
        """A weld began."""

    def window(self, tracker: WeldTracker, window: Window, judged_by_production: bool) -> None:
        """Production has its probability of `window` (or left it out)."""

    def ended(self, tracker: WeldTracker, result: WeldResult, end_index: int) -> None:
        """The weld's production result was emitted."""


@dataclass
class OpenWeld:
    """A weld between its start and end boundaries."""

    tracker: WeldTracker
    windower: WeldWindower
    worker: InferenceWorker  # the model it started with judges all its windows
    confirmed: int = 0  # the latest arc confirmation queued for its tracker


@dataclass
class VerdictCounters:
    """Monotonic counters of the ordered half."""

    windows: int = 0  # submitted (or lost at submission)
    windows_failed: int = 0  # lost at submission, or inference failed
    windows_not_finite: int = 0  # left out: mostly repaired NaN/Inf audio
    results: int = 0


# In place of a window's future: not judged, its audio was mostly repaired NaN/Inf samples.
_NOT_FINITE: Future[float] = Future()

_WindowItem = tuple[Literal["window"], WeldTracker, Window, "Future[float] | None"]
_EventItem = tuple[Literal["event"], Event]
_ConfirmItem = tuple[Literal["confirm"], WeldTracker, int]
# (end, weld, end index, reason, the weld's audio for the weld_audio hook or None, its facts)
_EndItem = tuple[Literal["end"], OpenWeld, int, EndReason, np.ndarray | None, WeldFacts | None]
_Item = _WindowItem | _EventItem | _ConfirmItem | _EndItem


class VerdictQueue:
    """One pipeline's ordered window -> event stage; use `async with` (or start / close)."""

    def __init__(
        self,
        emit: EventSink,
        max_in_flight: int,
        *,
        progress: bool = True,
        weld_audio: WeldAudioHook | None = None,
        on_window: WindowLatencyHook | None = None,
        observer: WeldObserver | None = None,
    ) -> None:
        self.emit = emit
        self._observer = observer  # after production, never ahead of it
        self.progress = progress
        self.counters = VerdictCounters()
        self._weld_audio = weld_audio
        self._on_window = on_window
        self._items: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max(1, max_in_flight))
        self._consumer: asyncio.Task[None] | None = None
        self._pending_since: collections.deque[float] = collections.deque()  # monotonic s
        self._users: dict[int, int] = {}  # id(worker) -> welds started on it, not yet ended
        self._released = asyncio.Event()

    def start(self) -> None:
        """Start the consumer task (event loop)."""
        self._consumer = asyncio.create_task(self._consume(), name="weldmon-pipeline-consumer")

    async def close(self) -> None:
        """Emit everything queued, then stop the consumer."""
        await self.drain()
        if self._consumer is not None:
            self._consumer.cancel()
            try:
                await self._consumer
            except asyncio.CancelledError:
                # The consumer's own end is expected; a cancel of the task closing us (Ctrl-C
                # in replay: asyncio.run cancels its main task) must go on to the caller.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def check(self) -> None:
        """Raise what stopped the consumer, if it died; RuntimeError before `start`."""
        task = self._consumer
        if task is None:
            raise RuntimeError("use the pipeline inside `async with`")
        if task.done() and not task.cancelled():
            failure = task.exception()
            if failure is not None:
                raise failure

    async def drain(self) -> None:
        """Wait until every item queued so far is handled and its events emitted."""
        self.check()
        await self._items.join()

    @property
    def oldest_pending_at(self) -> float | None:
        """time.monotonic() when the oldest window still awaiting its probability was
        submitted; None when none waits. Safe to read from another thread."""
        try:
            return self._pending_since[0]
        except IndexError:
            return None

    def welds_using(self, worker: InferenceWorker) -> int:
        """Welds started on `worker` whose result has not been emitted yet."""
        return self._users.get(id(worker), 0)

    async def wait_unused(self, worker: InferenceWorker) -> None:
        """Return once no weld started on `worker` is waiting for its result."""
        while self.welds_using(worker) > 0:
            self._released.clear()
            await self._released.wait()

    # -- the feed side ------------------------------------------------------------------------

    async def started(self, weld: OpenWeld) -> None:
        """A weld began: its start event, in order."""
        self._users[id(weld.worker)] = self._users.get(id(weld.worker), 0) + 1
        if self._observer is not None:
            self._observer.started(weld.tracker)
        await self._items.put(("event", weld.tracker.start_event()))

    async def submit(self, weld: OpenWeld, windows: list[Window]) -> None:
        """Hand `windows` to the weld's worker; their probabilities are awaited in order."""
        for w in windows:
            future: Future[float] | None
            submitted = time.monotonic()
            if not weld.tracker.judgeable(w.index, w.samples):
                self.counters.windows_not_finite += 1
                self.counters.windows += 1
                self._pending_since.append(submitted)
                await self._items.put(("window", weld.tracker, w, _NOT_FINITE))
                continue
            try:
                future = weld.worker.submit(w.samples)
            except Exception as exc:  # overload or a stopped worker: the window is lost, counted
                log.error("window_not_judged", weld_id=weld.tracker.weld_id, error=str(exc))
                future = None
            if future is not None and self._on_window is not None:
                future.add_done_callback(self._latency_callback(submitted))
            self.counters.windows += 1
            self._pending_since.append(submitted)
            await self._items.put(("window", weld.tracker, w, future))

    async def confirm(self, weld: OpenWeld, index: int) -> None:
        """The segmenter confirmed the weld's arc up to sample `index` (queued only when it
        moved on, after the windows submitted before it)."""
        if index > weld.confirmed:
            weld.confirmed = index
            await self._items.put(("confirm", weld.tracker, index))

    async def ended(
        self,
        weld: OpenWeld,
        end_index: int,
        reason: EndReason,
        audio: np.ndarray | None,
        facts: WeldFacts | None = None,
    ) -> None:
        """A weld ended at `end_index`: its result (with `audio` for the hook and the weld's
        `facts`), in order."""
        await self._items.put(("end", weld, end_index, reason, audio, facts))

    # -- the consumer ---------------------------------------------------------------------------

    def _latency_callback(self, submitted: float) -> Callable[[Future[float]], None]:
        hook = self._on_window
        assert hook is not None

        def done(future: Future[float]) -> None:
            if not future.cancelled() and future.exception() is None:
                hook(time.monotonic() - submitted)

        return done

    async def _consume(self) -> None:
        while True:
            item = await self._items.get()
            try:
                await self._handle(item)
            finally:
                self._items.task_done()

    async def _handle(self, item: _Item) -> None:
        if item[0] == "event":
            self.emit(item[1])
        elif item[0] == "confirm":
            for alert in item[1].confirm(item[2]):
                self.emit(alert)
        elif item[0] == "window":
            _, tracker, window, future = item
            try:
                prob = await self._probability(tracker, future)
            finally:
                self._pending_since.popleft()
            for event in tracker.add_window(window.index, prob, window.end, self.progress):
                self.emit(event)
            if self._observer is not None:
                self._observer.window(tracker, window, future is not _NOT_FINITE)
        else:
            _, weld, end_index, reason, audio, facts = item
            self.counters.results += 1
            try:
                # The end is decided: every window before it is inside the weld. A weld whose
                # start was only decided at its end (shorter than crackle's confirm_s) had no
                # window confirmed while it went on; its alert, if the rule holds, comes now,
                # just before the result, so a consumer of alerts alone misses no defect.
                for alert in weld.tracker.confirm(end_index):
                    self.emit(alert)
                result = self._result(weld, end_index, reason, audio, facts)
                self.emit(result)
                if self._observer is not None:
                    self._observer.ended(weld.tracker, result, end_index)
            finally:
                key = id(weld.worker)
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key]
                self._released.set()

    def _result(
        self,
        weld: OpenWeld,
        end_index: int,
        reason: EndReason,
        audio: np.ndarray | None,
        facts: WeldFacts | None,
    ) -> WeldResult:
        result = weld.tracker.result(end_index, reason, facts)
        if audio is None or audio.size == 0 or self._weld_audio is None:
            return result
        return self._weld_audio(result, audio, weld.tracker.judged_probs(end_index))

    async def _probability(
        self, tracker: WeldTracker, future: Future[float] | None
    ) -> float | None:
        if future is _NOT_FINITE:
            return None  # its audio was the repair of NaN/Inf samples (tracker.judgeable)
        if future is None:
            self.counters.windows_failed += 1
            return None
        try:
            prob = await asyncio.wrap_future(future)
        except Exception as exc:  # the worker already logged it; the weld says it is degraded
            self.counters.windows_failed += 1
            log.warning("window_failed", weld_id=tracker.weld_id, error=str(exc))
            return None
        return prob if math.isfinite(prob) else None
