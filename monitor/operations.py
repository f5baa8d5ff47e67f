"""What the daemon tells operators besides weld events: the systemd status line, Prometheus
metrics fed from events and component counters, and defect clips written off the loop.

Pure bookkeeping (`StatusSummary`, `record_event`, `copy_totals`) plus `ClipWriter`, which
owns one writer thread. `monitor.daemon` wires them to the running parts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import structlog

from monitor.capture import CaptureCounters
from monitor.clips import ClipStore, clip_audio_path, wants_clip
from monitor.events import ErrorEvent, Event, WeldAlert, WeldResult
from monitor.health import HealthSnapshot
from monitor.metrics import Metrics
from monitor.publisher import MqttPublisher

SHA_SHOWN_CHARS = 12  # enough to tell two artifacts apart in `systemctl status`
# Clips waiting for the writer thread at most; each holds one weld's audio (<= max_weld_s),
# so this bounds the memory a slow disk can pin. Beyond it a clip is skipped, logged, counted.
MAX_PENDING_CLIPS = 8
CLIP_WRITER_THREADS = 1  # ClipStore serialises writes anyway; one thread keeps order

log = structlog.get_logger(__name__)


@dataclass
class StatusSummary:
    """The one-line ``STATUS=`` summary: welds so far, the last verdict, the link."""

    welds: int = 0
    defects: int = 0
    alerts: int = 0
    errors: int = 0
    last: str = "none yet"

    def on_event(self, event: Event) -> None:
        """Count one event."""
        if isinstance(event, WeldResult):
            self.welds += 1
            self.defects += event.label
            at = event.ended_at.strftime("%H:%M:%SZ")
            self.last = f"{event.station} {event.label_name} p={event.p_defect:.2f} at {at}"
        elif isinstance(event, WeldAlert):
            self.alerts += 1
        elif isinstance(event, ErrorEvent):
            self.errors += 1

    def line(self, mqtt: str, model_sha256: str, note: str | None = None) -> str:
        """The summary as one line (`Notifier.status` cuts it to its limit)."""
        parts = [
            f"welds {self.welds} ({self.defects} defect, {self.alerts} alerts)",
            f"last {self.last}",
            f"mqtt {mqtt}",
            f"model {model_sha256[:SHA_SHOWN_CHARS]}",
        ]
        if self.errors:
            parts.append(f"{self.errors} errors")
        if note:
            parts.insert(0, note)
        return " | ".join(parts)


def record_event(metrics: Metrics, event: Event) -> None:
    """Count a weld result (by station, label and degraded reason) or an alert."""
    if isinstance(event, WeldResult):
        reasons = event.degraded_reasons or [None]
        metrics.weld_result(event.station, event.label_name, reasons[0])
        for reason in reasons[1:]:
            metrics.welds_degraded.labels(station=event.station, reason=reason).inc()
    elif isinstance(event, WeldAlert):
        metrics.alert(event.station)


def copy_totals(
    metrics: Metrics, capture: CaptureCounters | None, publisher: MqttPublisher | None
) -> None:
    """Raise the counters components keep as running totals to their current values.

    Frames, drops and NaN repairs are counted per block (`Metrics.audio_block`), so only
    what no block carries comes from the capture: PortAudio overflows and device losses.
    """
    if capture is not None:
        metrics.advance_to(metrics.audio_overflows, capture.input_overflows)
        metrics.advance_to(metrics.device_losses, capture.device_losses)
    if publisher is not None:
        metrics.advance_to(metrics.mqtt_reconnects, publisher.counters.reconnects)
        metrics.advance_to(metrics.outbox_dropped, publisher.outbox.counters.dropped_low_priority)


def health_snapshot(
    *,
    last_block_at: float | None,
    pending_at: float | None,
    mqtt_enabled: bool,
    publisher: MqttPublisher | None,
) -> HealthSnapshot:
    """What /healthz judges, from ``time.monotonic()`` stamps and the publisher. Runs on the
    HTTP thread: reads attributes and one indexed SQLite row (the outbox takes its lock).
    The model is always loaded while the daemon runs (it starts only after the self-test)."""
    now = time.monotonic()
    oldest_age = None
    if publisher is not None:
        oldest = publisher.outbox.pending(1)
        oldest_age = max(0.0, time.time() - oldest[0].created_at) if oldest else None
    return HealthSnapshot(
        model_loaded=True,
        audio_age_s=None if last_block_at is None else max(0.0, now - last_block_at),
        pending_window_age_s=None if pending_at is None else max(0.0, now - pending_at),
        mqtt_enabled=mqtt_enabled,
        mqtt_connected=publisher is not None and publisher.counters.connected,
        outbox_depth=publisher.outbox.depth if publisher is not None else 0,
        outbox_oldest_age_s=oldest_age,
    )


class ClipWriter:
    """The pipeline's weld-audio hook: decides by policy, names the clip in the result at
    once (its path is known before the write) and writes FLAC + sidecar on its own thread.

    A failed write is logged and reported through `on_error` (an ``error`` event); the
    result has already left with its ``clip_path``, and the error event names that path.
    """

    def __init__(
        self,
        store: ClipStore,
        sample_rate: int,
        on_error: Callable[[WeldResult, str], None],
    ) -> None:
        self.store = store
        self.sample_rate = sample_rate
        self._on_error = on_error
        self._pool = concurrent.futures.ThreadPoolExecutor(
            CLIP_WRITER_THREADS, thread_name_prefix="weldmon-clips"
        )
        self._pending: set[asyncio.Future[object]] = set()
        self.counters = {"scheduled": 0, "skipped_by_policy": 0, "skipped_backlog": 0, "failed": 0}

    def __call__(self, result: WeldResult, samples: np.ndarray, probs: list[float]) -> WeldResult:
        """Called on the event loop with the weld's audio when its result is ready."""
        if not wants_clip(self.store.settings.policy, result):
            self.counters["skipped_by_policy"] += 1
            return result
        if len(self._pending) >= MAX_PENDING_CLIPS:
            self.counters["skipped_backlog"] += 1
            log.error("clip_skipped_backlog", weld_id=result.weld_id, pending=len(self._pending))
            return result
        path = clip_audio_path(self.store.clips_dir, result.station, result.weld_id)
        result = result.model_copy(update={"clip_path": str(path)})
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._pool, self.store.write, result, samples, self.sample_rate, probs
        )
        self._pending.add(future)
        future.add_done_callback(lambda f, r=result: self._done(f, r))
        self.counters["scheduled"] += 1
        return result

    def _done(self, future: asyncio.Future[object], result: WeldResult) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.counters["failed"] += 1
            log.error("clip_write_failed", weld_id=result.weld_id, error=str(exc))
            self._on_error(result, f"clip {result.clip_path} not written: {exc}")
        else:
            log.info("clip_written", weld_id=result.weld_id, path=result.clip_path)

    async def close(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the writes in flight, then release the thread."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)
        if self._pending:
            log.error("clips_unfinished_at_stop", pending=len(self._pending))
        self._pool.shutdown(wait=False, cancel_futures=True)
