"""What the daemon tells operators besides weld events: the systemd status line and
Prometheus metrics fed from events and component counters.

Pure bookkeeping (`StatusSummary`, `record_event`, `copy_totals`, `health_snapshot`);
`monitor.daemon` wires them to the running parts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from monitor.audio.capture import CaptureCounters
from monitor.events import ErrorEvent, Event, WeldAlert, WeldResult, WeldStart
from monitor.ops.health import HealthSnapshot
from monitor.ops.metrics import Metrics
from monitor.publish.publisher import MqttPublisher

SHA_SHOWN_CHARS = 12  # enough to tell two artifacts apart in `systemctl status`

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
    """Count a weld result (by station, label and degraded reason) or an alert; keep the
    station's weld-in-progress flag and latest p_defect."""
    if isinstance(event, WeldResult):
        reasons = event.degraded_reasons or [None]
        metrics.weld_result(event.station, event.label_name, reasons[0])
        metrics.weld_last_p_defect.labels(station=event.station).set(event.p_defect)
        for reason in reasons[1:]:
            metrics.welds_degraded.labels(station=event.station, reason=reason).inc()
    elif isinstance(event, WeldAlert):
        metrics.alert(event.station)
    elif isinstance(event, WeldStart):
        metrics.weld_started(event.station)


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
        if publisher.outbox is not None:
            dropped = publisher.outbox.counters.dropped_low_priority
            metrics.advance_to(metrics.outbox_dropped, dropped)
        metrics.advance_to(metrics.outbox_write_failures, publisher.spool.counters.write_failures)


def station_health(metrics: Metrics, station: str, max_audio_age_s: float) -> str:
    """One word for a station's audio path, worst first: ``no_device`` (the stream is not
    open), ``no_audio`` (no block for longer than `max_audio_age_s`), ``dead_microphone``
    (one of its channels is in a silence episode), else ``ok``. Only reads: safe from any
    thread."""
    if not metrics.device_is_open:
        return "no_device"
    if metrics.audio_age_s() > max_audio_age_s:
        return "no_audio"
    if any(s == station for s, _ in metrics.dead_channels):
        return "dead_microphone"
    return "ok"


def outbox_oldest_age_s(publisher: MqttPublisher) -> float | None:
    """Seconds the oldest unacknowledged event has waited (stored, or held in memory while
    the outbox fails); None when none waits. One indexed SQLite row (the outbox takes its
    lock), so a scrape or /healthz may call it."""
    oldest = publisher.spool.oldest_created_at()
    return max(0.0, time.time() - oldest) if oldest is not None else None


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
    now, wall = time.monotonic(), time.time()
    oldest_age = outbox_oldest_age_s(publisher) if publisher is not None else None
    failing_s = None
    spool = publisher.spool if publisher is not None else None
    if spool is not None and spool.degraded_since is not None:
        failing_s = max(0.0, wall - spool.degraded_since)
    return HealthSnapshot(
        model_loaded=True,
        audio_age_s=None if last_block_at is None else max(0.0, now - last_block_at),
        pending_window_age_s=None if pending_at is None else max(0.0, now - pending_at),
        mqtt_enabled=mqtt_enabled,
        mqtt_connected=publisher is not None and publisher.counters.connected,
        outbox_depth=spool.depth if spool is not None else 0,
        outbox_oldest_age_s=oldest_age,
        outbox_failing_s=failing_s,
        outbox_error=spool.last_error if spool is not None else None,
        outbox_held=spool.held if spool is not None else 0,
    )
