"""The inference worker: the one thread that runs the model, batching windows from every
station.

Ownership: the worker owns the `DeployModel` (which is not thread-safe) once started; nothing
else calls it. Callers hand in windows with `submit` and get a `concurrent.futures.Future`
with the window's defect probability; async code awaits it through `asyncio.wrap_future`.

Queue and overload: at most `queue_windows` windows wait. `submit` never blocks (the event
loop must not); a full queue raises `InferenceOverloadError` and counts the window in
`counters.rejected`. The pipeline keeps its own in-flight bound at the same size, so in normal
operation it waits instead (back-pressure reaches the capture ring buffer, where a sustained
overload becomes counted dropped frames and degraded welds rather than an unbounded queue).
Batching: the worker takes whatever is waiting, up to `max_batch_windows`, per forward pass;
under light load a batch is one window, so latency is one forward pass.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Self

import numpy as np
import structlog

from deploy.errors import WeldmonError
from deploy.loader import DeployModel

log = structlog.get_logger(__name__)


class InferenceOverloadError(WeldmonError):
    """The inference queue is full; the window was not accepted."""


class InferenceStoppedError(WeldmonError):
    """The worker is not running (never started, stopped, or died)."""


@dataclass
class InferenceCounters:
    """Monotonic counters (and two gauges) for metrics and the watchdog."""

    windows: int = 0  # windows judged
    batches: int = 0  # forward passes
    failed_windows: int = 0  # windows whose forward pass raised
    rejected: int = 0  # submits refused because the queue was full
    busy_s: float = 0.0  # time spent in forward passes
    cpu_s: float = 0.0  # CPU time of the worker thread (its forward passes, all cores)
    max_queue_depth: int = 0  # high-water mark of waiting windows
    last_batch_at: float = 0.0  # time.monotonic() of the latest finished batch (watchdog)

    def as_dict(self) -> dict[str, float | int]:
        """The counters by name."""
        return asdict(self)


# A queued window and the future its probability goes to; None is the stop marker.
_Item = tuple[np.ndarray, Future[float]]
_STOP = None


class InferenceWorker:
    """One thread, one model, batched forward passes; use as a context manager."""

    def __init__(self, model: DeployModel, max_batch_windows: int, queue_windows: int) -> None:
        if max_batch_windows < 1 or queue_windows < 1:
            raise ValueError("max_batch_windows and queue_windows must be >= 1")
        self.model = model
        self.chunk_samples = model.chunk_samples
        self.max_batch_windows = max_batch_windows
        self.queue_windows = queue_windows
        self.counters = InferenceCounters()
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=queue_windows + 1)
        self._thread = threading.Thread(target=self._run, name="weldmon-inference", daemon=True)
        self._running = False

    @property
    def queue_depth(self) -> int:
        """Windows waiting for the worker now."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the worker thread."""
        self._running = True
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the windows already queued, then end the thread (waits up to `timeout_s`)."""
        if not self._running:
            return
        self._running = False
        self._queue.put(_STOP)  # the +1 slot: always room for the stop marker
        self._thread.join(timeout_s)
        self._fail_waiting(InferenceStoppedError("inference worker stopped"))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def submit(self, window: np.ndarray) -> Future[float]:
        """Queue one [chunk_samples] float32 window; the future gets its defect probability."""
        if not self._running or not self._thread.is_alive():
            raise InferenceStoppedError("inference worker is not running")
        if window.shape != (self.chunk_samples,):
            raise ValueError(f"window must have shape ({self.chunk_samples},), got {window.shape}")
        future: Future[float] = Future()
        if self._queue.qsize() >= self.queue_windows:
            self.counters.rejected += 1
            raise InferenceOverloadError(f"inference queue full ({self.queue_windows} windows)")
        self._queue.put_nowait((window, future))
        self.counters.max_queue_depth = max(self.counters.max_queue_depth, self._queue.qsize())
        return future

    def _run(self) -> None:
        # Intra-op threads are the model's own setting (`inference.threads`, loaded with it),
        # whichever the backend: ONNX Runtime fixes them per session, TorchScript on this thread.
        stopping = False
        while not stopping:
            first = self._queue.get()  # stop() always queues _STOP: no need to poll
            batch: list[tuple[np.ndarray, Future[float]]] = []
            item = first
            while True:
                if item is None:  # _STOP
                    stopping = True
                else:
                    batch.append(item)
                if stopping or len(batch) >= self.max_batch_windows:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._judge(batch)

    def _judge(self, batch: list[tuple[np.ndarray, Future[float]]]) -> None:
        live = [(w, f) for w, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        t0 = time.perf_counter()
        try:
            probs = self.model.window_probs(np.stack([w for w, _ in live]), len(live))
        except Exception as exc:  # any failure of the model fails these windows, not the thread
            self.counters.failed_windows += len(live)
            log.error("inference_failed", windows=len(live), error=str(exc))
            for _, f in live:
                f.set_exception(exc)
            return
        self.counters.busy_s += time.perf_counter() - t0
        self.counters.cpu_s = time.thread_time()  # runs on the worker thread: its own time
        self.counters.windows += len(live)
        self.counters.batches += 1
        self.counters.last_batch_at = time.monotonic()
        for (_, f), p in zip(live, probs, strict=True):
            f.set_result(float(p))

    def _fail_waiting(self, exc: Exception) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:  # _STOP
                _, future = item
                if future.set_running_or_notify_cancel():
                    future.set_exception(exc)


class ModelWorkers:
    """The worker of the model in use and the old workers still judging welds that started
    on them (after a reload): each old one is stopped once its last weld is judged.

    Event loop only. ``stop_all`` stops every worker (shutdown)."""

    def __init__(self, max_batch_windows: int, queue_windows: int) -> None:
        self.max_batch_windows = max_batch_windows
        self.queue_windows = queue_windows
        self.current: InferenceWorker | None = None
        self._retiring: dict[InferenceWorker, asyncio.Task[None]] = {}
        self._stopped_cpu_s = 0.0  # CPU seconds of the workers already stopped

    def start(self, model: DeployModel) -> InferenceWorker:
        """A started worker for `model`; it becomes current with `use`."""
        worker = InferenceWorker(model, self.max_batch_windows, self.queue_windows)
        worker.start()
        return worker

    def use(
        self, worker: InferenceWorker, unused: Callable[[InferenceWorker], Awaitable[None]]
    ) -> None:
        """Make `worker` current; the previous one stops once `unused(previous)` returns."""
        old, self.current = self.current, worker
        if old is not None:
            task = asyncio.get_running_loop().create_task(self._retire(old, unused))
            self._retiring[old] = task

    async def _retire(
        self, worker: InferenceWorker, unused: Callable[[InferenceWorker], Awaitable[None]]
    ) -> None:
        await unused(worker)
        await asyncio.to_thread(worker.stop)
        self._stopped_cpu_s += worker.counters.cpu_s
        self._retiring.pop(worker, None)
        log.info("old_model_released", windows=worker.counters.windows)

    def cpu_s(self) -> float:
        """CPU seconds of every production worker thread so far (monotonic)."""
        live = [*self._retiring, *([self.current] if self.current is not None else [])]
        return self._stopped_cpu_s + sum(w.counters.cpu_s for w in live)

    def queue_depth(self) -> float:
        """Windows waiting in every worker (a gauge)."""
        workers = [*self._retiring, self.current]
        return float(sum(w.queue_depth for w in workers if w is not None))

    def stop_all(self) -> None:
        """Stop every worker, current and retiring."""
        for task in self._retiring.values():
            task.cancel()
        for worker in [*self._retiring, self.current]:
            if worker is not None:
                worker.stop()
