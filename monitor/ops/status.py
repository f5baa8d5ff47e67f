"""What the daemon tells operators besides weld events: the systemd status line, Prometheus
metrics fed from events and component counters, the watchdog, /healthz and the stats log.

Pure bookkeeping (`StatusSummary`, `record_event`, `copy_totals`, `health_snapshot`) and
`Operations`, which owns the metrics, the systemd notifier and the summary and runs the
daemon's two reporting loops (`report`, `keep_watchdog`). It reads the running parts through
a `DaemonState` the daemon hands it and changes none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from deploy.loader import DeployModel
from monitor.audio.blocks import AudioBlock
from monitor.audio.capture import CaptureCounters
from monitor.audio.capture_thread import CaptureThread
from monitor.audio.silence import SilenceWatch
from monitor.events import ErrorEvent, Event, WeldAlert, WeldResult, WeldStart
from monitor.ops.health import HealthServer, HealthServerError, HealthSnapshot, HttpConfig
from monitor.ops.metrics import MALFORMED_KINDS, Metrics
from monitor.ops.notify import Notifier, WatchdogGate, WatchdogProbe, feed_watchdog
from monitor.publish.opcua_state import OpcUaConfig
from monitor.publish.publisher import MqttPublisher

SHA_SHOWN_CHARS = 12  # enough to tell two artifacts apart in `systemctl status`
STATS_INTERVAL_S = 60.0  # one stats log line per minute
TICK_S = 1.0  # metrics copied from component counters, boot timeout extended
STATUS_INTERVAL_S = 5.0  # STATUS= at most this often unless something changed
# While the device is missing at boot: ask systemd for this much more start-up time on each
# tick, so TimeoutStartSec never fires while we are visibly retrying.
BOOT_EXTEND_S = 10.0

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
    """Count a weld result (by station, label and degraded reason; its segmentation
    self-check, when made) or an alert; keep the station's weld-in-progress flag and latest
    p_defect."""
    if isinstance(event, WeldResult):
        reasons: list[str] | list[None] = event.degraded_reasons or [None]
        metrics.weld_result(event.station, event.label_name, reasons[0])
        metrics.weld_last_p_defect.labels(station=event.station).set(event.p_defect)
        for reason in reasons[1:]:
            metrics.welds_degraded.labels(station=event.station, reason=reason).inc()
        process = event.process
        if process is not None and process.arc_matched is not None:
            metrics.boundary_check(event.station, process.start_error_s, process.end_error_s)
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
        spool = publisher.spool  # the one facade over the outbox and the events held in memory
        metrics.advance_to(metrics.outbox_over_bound, spool.over_bound)
        metrics.advance_to(metrics.outbox_write_failures, spool.counters.write_failures)
        metrics.advance_to(metrics.outbox_reopened, spool.reopened)
        ignored = metrics.inbound_ignored
        metrics.advance_to(ignored.labels(reason="retained"), publisher.counters.ignored_retained)
        metrics.advance_to(ignored.labels(reason="empty"), publisher.counters.ignored_empty)


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


class DaemonState(Protocol):
    """What the reporting loops read from the running daemon (event loop and HTTP thread)."""

    @property
    def ready(self) -> bool:
        """The first audio block was fed (READY=1 was sent)."""
        ...

    @property
    def capture(self) -> CaptureThread | None: ...

    @property
    def publisher(self) -> MqttPublisher | None: ...

    @property
    def model(self) -> DeployModel:
        """The model in use."""
        ...

    @property
    def last_block_at(self) -> float | None:
        """``time.monotonic()`` of the latest audio block, None before the first."""
        ...

    @property
    def oldest_pending_at(self) -> float | None:
        """``time.monotonic()`` when the oldest window awaiting inference was submitted."""
        ...

    def stats(self) -> dict[str, object]:
        """The components' counters for the stats log line."""
        ...

    def pipeline_counts(self) -> dict[str, int]:
        """The pipeline's running totals by name (`Pipeline.counts`), {} while none runs."""
        ...


class Operations:
    """The operator-facing side of the daemon: metrics, systemd notify, the status line."""

    def __init__(
        self,
        model_sha256: str,
        stations: list[str],
        channel_stations: list[str],
        silence_alarm_s: float | None,
        notifier: Notifier | None = None,
    ) -> None:
        self.metrics = Metrics()
        self.metrics.model(model_sha256)
        self.channel_stations = channel_stations  # the station each input channel feeds
        self.metrics.declare_stations(stations, channel_stations)
        self.silence = SilenceWatch(silence_alarm_s)
        self.notifier = notifier or Notifier.from_environment()
        self.summary = StatusSummary()

    def device_opened(self) -> None:
        """A stream epoch began: the device is open and no channel is in a silence episode
        (silence before the stream opened does not count)."""
        self.metrics.device(is_open=True)
        self.silence.reset()
        for channel, station in enumerate(self.channel_stations):
            self.metrics.dead_microphone(station, channel, dead=False)

    def on_block(self, block: AudioBlock) -> list[tuple[str, str]]:
        """Count one audio block's frames, losses and repairs and watch it for dead
        microphones; returns (station, message) for every alarm that began. The gauge is set
        before the log line (whoever reads the log may scrape at once)."""
        self.metrics.audio_block(
            block.frames,
            dropped_frames=block.dropped_frames,
            nonfinite_samples=block.nonfinite_samples,
        )
        alarms = []
        for quiet in self.silence.changes(block, self.channel_stations):
            channel, station = quiet.change.channel, quiet.station
            self.metrics.dead_microphone(station, channel, quiet.alarm)
            if quiet.alarm:
                log.error("dead_microphone", channel=channel, station=station)
                alarms.append((station, quiet.message))
            else:
                log.info("microphone_sound_returned", channel=channel, station=station)
        return alarms

    def on_event(self, event: Event) -> None:
        """Count one event in the metrics and the status summary (an event listener)."""
        record_event(self.metrics, event)
        self.summary.on_event(event)

    def status_line(self, state: DaemonState) -> str:
        """The ``STATUS=`` line now."""
        capture, publisher = state.capture, state.publisher
        note = "waiting for audio device" if capture and capture.waiting_for_device else None
        mqtt = "off" if publisher is None else "disconnected"
        if publisher is not None and publisher.counters.connected:
            mqtt = "connected"
        return self.summary.line(mqtt, state.model.sha256, note)

    def bind_gauges(
        self, queue_depth: Callable[[], float], publisher: MqttPublisher | None
    ) -> None:
        """Gauges read at scrape time: inference backlog, MQTT link, outbox depth."""
        m = self.metrics
        m.inference_queue_depth.set_function(queue_depth)
        if publisher is not None:
            m.mqtt_connected.set_function(lambda: float(publisher.counters.connected))
            m.outbox_depth.set_function(lambda: float(publisher.spool.depth))
            m.outbox_oldest_age.set_function(lambda: outbox_oldest_age_s(publisher) or 0.0)
            m.outbox_degraded.set_function(lambda: float(publisher.spool.degraded))
            m.outbox_held.set_function(lambda: float(publisher.spool.held))

    @contextlib.asynccontextmanager
    async def http(
        self, cfg: HttpConfig, snapshot: Callable[[], HealthSnapshot]
    ) -> AsyncIterator[str | None]:
        """Serve /metrics and /healthz while the body runs (if enabled); yields why the server
        could not start, or None. Judging welds matters more than being scraped, so a port in
        use is reported, not fatal."""
        if not cfg.enabled:
            yield None
            return
        server = HealthServer(cfg, self.metrics.registry, snapshot)
        try:
            server.start()
        except HealthServerError as exc:
            log.error("http_unavailable", error=str(exc))
            yield str(exc)
            return
        try:
            yield None
        finally:
            await asyncio.to_thread(server.stop)

    async def report(self, state: DaemonState) -> None:
        """Every TICK_S until cancelled: copy component totals into the metrics, extend the
        boot timeout while the device is missing, send STATUS= on change (or every
        STATUS_INTERVAL_S) and log the stats line every STATS_INTERVAL_S."""
        next_stats = time.monotonic() + STATS_INTERVAL_S
        next_status, last_line = 0.0, ""
        while True:
            await asyncio.sleep(TICK_S)
            capture = state.capture
            if state.publisher is not None:
                state.publisher.spool.check_outbox_file()
            copy_totals(self.metrics, capture.counters() if capture else None, state.publisher)
            self.metrics.pipeline_totals(state.pipeline_counts())
            now = time.monotonic()
            if not state.ready and capture is not None and capture.waiting_for_device:
                self.notifier.extend_timeout(BOOT_EXTEND_S)
            line = self.status_line(state)
            if line != last_line or now >= next_status:
                self.notifier.status(line)
                last_line, next_status = line, now + STATUS_INTERVAL_S
            if now >= next_stats:
                next_stats += STATS_INTERVAL_S
                self.log_stats(state)

    async def keep_watchdog(
        self, gate: WatchdogGate, state: DaemonState, stop: asyncio.Event
    ) -> None:
        """Feed systemd's watchdog while `gate` says the daemon works, until `stop`."""
        await feed_watchdog(
            self.notifier,
            gate,
            lambda: self.watchdog_probe(state),
            stop,
            on_withheld=lambda _: self.metrics.watchdog_withheld.inc(),
        )

    @staticmethod
    def watchdog_probe(state: DaemonState) -> WatchdogProbe:
        """What the watchdog gate judges now."""
        capture = state.capture
        return WatchdogProbe(
            last_audio_at=state.last_block_at,
            oldest_pending_at=state.oldest_pending_at,
            last_device_attempt_at=capture.last_failed_open_at if capture else None,
        )

    @staticmethod
    def health(state: DaemonState, mqtt_enabled: bool) -> HealthSnapshot:
        """What /healthz judges now (runs on the HTTP thread; reads only)."""
        return health_snapshot(
            last_block_at=state.last_block_at,
            pending_at=state.oldest_pending_at,
            mqtt_enabled=mqtt_enabled,
            publisher=state.publisher,
        )

    def opcua(
        self,
        cfg: OpcUaConfig,
        stations: list[str],
        http: HttpConfig,
        report: Callable[[str, str], None],
    ) -> contextlib.AbstractAsyncContextManager[Callable[[Event], None]]:
        """The OPC UA server (`monitor.publish.opcua.serving`), each station's health read
        from these metrics against ``http.max_audio_age_s``; enter it to serve."""
        from monitor.publish import opcua  # the optional `opcua` extra: asyncua

        def health(station: str) -> str:
            return station_health(self.metrics, station, http.max_audio_age_s)

        return opcua.serving(cfg, stations, health, report)

    def log_stats(self, state: DaemonState) -> None:
        """One log line with every component's counters."""
        capture = state.capture
        malformed = {kind: self.metrics.malformed_total(kind) for kind in MALFORMED_KINDS}
        log.info(
            "stats",
            capture=repr(capture.counters()) if capture else None,
            failed_device_opens=capture.failed_opens if capture else 0,
            malformed_messages=malformed,
            notify_send_failures=self.notifier.send_failures,
            **state.stats(),
        )
