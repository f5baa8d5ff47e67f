"""`weldmon run`: the real-time daemon.

Threads and ownership:
  * PortAudio's callback thread (inside `SoundDeviceCapture`) copies audio into the ring.
  * The capture thread (`monitor.audio.capture_thread.CaptureThread`) owns the capture: it waits
    for the device at boot, reads blocks, hands them to the loop through a bounded queue and
    reopens a lost device with capped back-off.
  * One inference thread per loaded model (`InferenceWorker`) owns that model and its runtime;
    after a reload the old one lives until the last weld started on it has its result.
  * The clip writer thread (`monitor.ops.clips.ClipWriter`) encodes and stores defect clips.
  * The HTTP thread (`HealthServer`) serves ``/metrics`` and ``/healthz``; it only reads.
  * The event loop runs the pipeline, MQTT, reloads, the watchdog and the signal handlers.

systemd (`monitor.ops.notify`): ``READY=1`` with the first audio block (the model was loaded and
self-tested before the loop started), ``STATUS=`` every few seconds, ``WATCHDOG=1`` while
`WatchdogGate` says audio flows and inference keeps up, ``EXTEND_TIMEOUT_USEC`` while the
device is missing at boot, ``STOPPING=1`` as shutdown begins.

Stop (SIGTERM/SIGINT): capture stops, the windows already cut are judged, open welds are
closed as `interrupted`, the outbox is flushed as far as the broker allows and `stopped` is
published; exit 0, within `stop_timeout_s`. SIGHUP and ``{prefix}/cmd/reload`` reload the
model (monitor/reload.py).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from deploy.errors import WeldmonError
from deploy.loader import DeployModel
from monitor.audio.blocks import AudioBlock
from monitor.audio.capture_thread import CaptureThread, Lost, Opened
from monitor.audio.silence import SilenceWatch
from monitor.config import MonitorConfig
from monitor.events import (
    ErrorEvent,
    MalformedMessageError,
    Source,
    WeldResult,
    parse_trigger,
    station_from_trigger_topic,
    status_payload_factory,
    status_topic,
    trigger_subscription,
)
from monitor.ops.clips import ClipStore, ClipWriter
from monitor.ops.health import HealthServer, HealthServerError, HealthSnapshot
from monitor.ops.metrics import Metrics
from monitor.ops.notify import Notifier, WatchdogGate, WatchdogProbe, feed_watchdog
from monitor.ops.status import (
    StatusSummary,
    copy_totals,
    health_snapshot,
    outbox_oldest_age_s,
    record_event,
    station_health,
)
from monitor.pipeline.core import Pipeline, PipelineError
from monitor.pipeline.inference import InferenceWorker
from monitor.publish.homeassistant import discovery_messages, is_homeassistant_birth
from monitor.publish.interrupted import report_interrupted
from monitor.publish.outbox import OutboxOpenError
from monitor.publish.publisher import MqttPublisher
from monitor.reload import (
    Reloader,
    ReloadError,
    ReloadPlan,
    parse_reload_command,
    prepare_reload,
    reload_topic,
)
from monitor.runtime import EventRouter, mqtt_link, pipeline_settings, tracker_options
from weldmon import __version__
from weldmon.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:  # imported when opcua.enabled: asyncua is the optional `opcua` extra
    from monitor.publish.opcua import OpcUaServer

STATS_INTERVAL_S = 60.0  # one stats log line per minute
TICK_S = 1.0  # metrics copied from component counters, boot timeout extended
STATUS_INTERVAL_S = 5.0  # STATUS= at most this often unless something changed
# While the device is missing at boot: ask systemd for this much more start-up time on each
# tick, so TimeoutStartSec never fires while we are visibly retrying.
BOOT_EXTEND_S = 10.0

log = structlog.get_logger(__name__)


class Daemon:
    """The running monitor: capture thread -> pipeline -> events, plus operations."""

    def __init__(
        self, cfg: MonitorConfig, model: DeployModel, config_path: Path | None = None
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.config_path = config_path
        self.mode = cfg.segmentation.mode
        if self.mode == "file":
            raise WeldmonError("segmentation.mode: 'file' is for replay; use gate or trigger")
        self.options = tracker_options(cfg, model, self.mode)
        self.settings = pipeline_settings(cfg)
        self.stopping = asyncio.Event()
        self.pipeline: Pipeline | None = None
        self.worker: InferenceWorker | None = None
        self.malformed_triggers = 0
        self.malformed_commands = 0
        self.metrics = Metrics()
        self.metrics.model(model.sha256)
        self.metrics.declare_stations(self.settings.stations, self._channel_stations())
        self.notifier = Notifier.from_environment()
        self.summary = StatusSummary()
        self.silence = SilenceWatch(cfg.audio.silence_alarm_s)
        self.reloader = Reloader(self._prepare_reload, self._apply_reload, self._reload_failed)
        self.clips: ClipWriter | None = None
        if cfg.clips.policy != "none":
            store = ClipStore(cfg.state_dir, cfg.clips)
            self.clips = ClipWriter(store, model.sample_rate, self._clip_failed)
        self._router = EventRouter(listeners=[self._on_event])
        self._publisher: MqttPublisher | None = None
        self._opcua: OpcUaServer | None = None
        self._capture: CaptureThread | None = None
        self._source: Source | None = None
        self._last_block_at: float | None = None  # time.monotonic() of the latest block
        self._ready = False
        self._old_workers: dict[InferenceWorker, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[object]] = set()

    # -- inbound: signals and MQTT ------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a clean shutdown (signal handler)."""
        if not self.stopping.is_set():
            log.info("stop_requested")
            self.notifier.stopping("stopping: finishing welds, flushing events")
        self.stopping.set()

    def on_message(self, topic: str, payload: bytes) -> None:
        """Inbound MQTT: reload commands, Home Assistant's birth, trigger messages."""
        prefix = self.cfg.mqtt.topic_prefix
        if topic == reload_topic(prefix):
            try:
                command = parse_reload_command(payload)
            except MalformedMessageError as exc:
                self.malformed_commands += 1
                self.metrics.malformed("command")
                log.warning("malformed_command", topic=topic, error=str(exc))
                return
            self.reloader.request(f"mqtt request_id={command.request_id}")
            return
        ha = self.cfg.homeassistant
        if ha.enabled and topic == ha.birth_topic:
            if is_homeassistant_birth(ha, topic, payload):
                self._spawn(self._publish_discovery())
            return
        try:
            station = station_from_trigger_topic(topic, prefix)
            trigger = parse_trigger(payload)
        except MalformedMessageError as exc:
            self.malformed_triggers += 1
            self.metrics.malformed("trigger")
            log.warning("malformed_trigger", topic=topic, error=str(exc))
            return
        if self.pipeline is None or not self.pipeline.push_trigger(
            station, trigger.state, time.time()
        ):
            log.warning("trigger_ignored", station=station, state=trigger.state)

    def _discovery(self) -> list[tuple[str, bytes, bool]]:
        ha, prefix = self.cfg.homeassistant, self.cfg.mqtt.topic_prefix
        return discovery_messages(ha, prefix, self.settings.stations, __version__)

    async def _publish_discovery(self) -> None:
        if self._publisher is None:
            return
        sent = 0
        for topic, payload, retain in self._discovery():
            sent += await self._publisher.publish_now(topic, payload, retain=retain)
        log.info("homeassistant_discovery_published", messages=sent)

    # -- life ---------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reloader.request, "SIGHUP")
        prefix = self.cfg.mqtt.topic_prefix
        subs = [trigger_subscription(prefix)] if self.mode == "trigger" else []
        subs.append(reload_topic(prefix))
        if self.cfg.homeassistant.enabled:
            subs.append(self.cfg.homeassistant.birth_topic)
        capture = self._capture = CaptureThread(self.cfg, loop)
        health: HealthServer | str | None = None
        try:
            self.worker = self._start_worker(self.model)
            health = self._start_health()
            async with mqtt_link(
                self.cfg,
                lambda: self.model.sha256,
                on_message=self.on_message,
                subscriptions=subs,
                connect_messages=self._discovery,
                on_outbox_state=self._outbox_state,
            ) as publisher:
                self._router.publisher = self._publisher = publisher
                self._bind_gauges()
                self._report_interrupted()
                if health is not None and isinstance(health, str):
                    self._error("http_unavailable", health)
                self._start_opcua(loop)
                capture.start()
                helpers = [
                    self._spawn(self._tick()),
                    self._spawn(self._feed_watchdog()),
                ]
                try:
                    await self._serve(capture)
                finally:
                    self.request_stop()
                    for task in helpers:
                        task.cancel()
                    await asyncio.to_thread(capture.join, self.cfg.stop_timeout_s / 4)
                    await self._finish()
        finally:
            if self._opcua is not None:
                await asyncio.to_thread(self._opcua.stop)
            if isinstance(health, HealthServer):
                await asyncio.to_thread(health.stop)
            self._stop_workers()
        log.info("stopped", events=self._router.counts)
        return EXIT_OK

    async def _finish(self) -> None:
        """Judge what was cut, close open welds as interrupted, let clip writes land."""
        if self.pipeline is not None:
            await self.pipeline.end_stream("shutdown", "interrupted")
            await self.pipeline.__aexit__(None, None, None)
        await self.reloader.close()
        if self.clips is not None:
            await self.clips.close(self.cfg.stop_timeout_s / 4)

    def _start_worker(self, model: DeployModel) -> InferenceWorker:
        inf = self.cfg.inference
        worker = InferenceWorker(model, inf.max_batch_windows, inf.queue_windows)
        worker.start()
        return worker

    def _stop_workers(self) -> None:
        for task in self._old_workers.values():
            task.cancel()
        for worker in [*self._old_workers, self.worker]:
            if worker is not None:
                worker.stop()

    def _start_health(self) -> HealthServer | str | None:
        if not self.cfg.http.enabled:
            return None
        server = HealthServer(self.cfg.http, self.metrics.registry, self._health_snapshot)
        try:
            server.start()
        except HealthServerError as exc:
            # Judging welds matters more than being scraped: keep running, say it loudly.
            log.error("http_unavailable", error=str(exc))
            return str(exc)
        return server

    def _start_opcua(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve OPC UA beside MQTT when configured; a failure is reported, never fatal."""
        cfg = self.cfg.opcua
        if not cfg.enabled:
            return
        from monitor.publish.opcua import OpcUaError, OpcUaServer

        def health(station: str) -> str:
            return station_health(self.metrics, station, self.cfg.http.max_audio_age_s)

        def failed(message: str) -> None:  # on the OPC UA thread
            loop.call_soon_threadsafe(self._error, "opcua_failed", message)

        server = self._opcua = OpcUaServer(cfg, self.settings.stations, health, failed)
        self._router.listeners.append(server)  # keeps the values while the server starts

        async def start() -> None:  # asyncua builds its address space for seconds: not inline
            try:
                await asyncio.to_thread(server.start)
            except OpcUaError as exc:
                # Verdicts matter more than one of their consumers: keep running, say it.
                log.error("opcua_unavailable", error=str(exc))
                self._error("opcua_unavailable", str(exc))

        self._spawn(start())

    def _spawn(self, coro: object) -> asyncio.Task[object]:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _serve(self, capture: CaptureThread) -> None:
        stop_wait = asyncio.ensure_future(self.stopping.wait())
        try:
            while True:
                get = asyncio.ensure_future(capture.items.get())
                done, _ = await asyncio.wait({get, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    return
                await self._handle(get.result())
        finally:
            stop_wait.cancel()

    # -- audio ----------------------------------------------------------------------------

    async def _handle(self, item: AudioBlock | Lost | Opened) -> None:
        if isinstance(item, Opened):
            self._source = Source(type="device", name=item.device_name)
            self.metrics.device(is_open=True)
            self._reset_silence()
            if self.pipeline is None or self.pipeline.source_rate != item.sample_rate:
                await self._close_pipeline("device_lost", "device_lost")
                self.pipeline = self._new_pipeline(item.sample_rate)
                await self.pipeline.__aenter__()
            return
        if isinstance(item, Lost):
            self.metrics.device(is_open=False)
            log.error("device_lost", error=item.message, open_welds=self._open_welds())
            self._error("device_lost", item.message)
            if self.pipeline is not None:
                await self.pipeline.end_stream("device_lost", "device_lost")
            return
        assert self.pipeline is not None and self._source is not None
        self._last_block_at = time.monotonic()
        self.metrics.audio_block(
            item.frames,
            dropped_frames=item.dropped_frames,
            nonfinite_samples=item.nonfinite_samples,
        )
        self._check_silence(item)
        await self.pipeline.feed(item, self._source)
        if not self._ready:
            self._ready = True
            log.info("ready", device=self._source.name, sample_rate=item.sample_rate)
            self.notifier.ready(self._status_line())

    def _new_pipeline(self, sample_rate: int) -> Pipeline:
        assert self.worker is not None
        return Pipeline(
            self.settings,
            self.options,
            self.worker,
            self._router,
            sample_rate,
            weld_audio=self.clips,
            on_window=self.metrics.window_inferred,
        )

    def _channel_stations(self) -> list[str]:
        """The station each input channel feeds (every channel feeds the one `mix` station)."""
        stations = self.settings.stations
        if self.settings.channel_mode == "per_channel":
            return list(stations)
        return [stations[0]] * self.cfg.audio.channels

    def _reset_silence(self) -> None:
        self.silence.reset()
        for channel, station in enumerate(self._channel_stations()):
            self.metrics.dead_microphone(station, channel, dead=False)

    def _check_silence(self, block: AudioBlock) -> None:
        stations = self._channel_stations()
        for change in self.silence.update(block.samples, block.sample_rate):
            station = stations[change.channel]
            self.metrics.dead_microphone(station, change.channel, change.change == "alarm")
            if change.change == "cleared":
                log.info("microphone_sound_returned", channel=change.channel, station=station)
                continue
            message = (
                f"probable dead microphone: input channel {change.channel} ({station}) has "
                f"delivered exact digital silence for {change.silent_s:.0f} s"
            )
            log.error("dead_microphone", channel=change.channel, station=station)
            self._error("dead_microphone", message, station=station)

    def _open_welds(self) -> list[str]:
        return self.pipeline.open_welds if self.pipeline is not None else []

    async def _close_pipeline(self, end_reason: str, degraded: str) -> None:
        if self.pipeline is not None:
            await self.pipeline.end_stream(end_reason, degraded)  # type: ignore[arg-type]
            await self.pipeline.__aexit__(None, None, None)
            self.pipeline = None

    # -- events -----------------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        record_event(self.metrics, event)  # type: ignore[arg-type]
        self.summary.on_event(event)  # type: ignore[arg-type]

    def _error(self, code: str, message: str, **fields: object) -> None:
        self._router(
            ErrorEvent(
                daemon_version=__version__,
                **self.options.model.event_fields(),
                code=code,
                message=message,
                source=self._source,
                **fields,  # type: ignore[arg-type]
            )
        )

    def _report_interrupted(self) -> None:
        """Results for the welds a killed daemon left open (before any new audio)."""
        publisher = self._publisher
        if publisher is None or publisher.outbox is None:
            return
        welds = report_interrupted(publisher.outbox, self._router)
        if welds:
            self._error(
                "interrupted_welds",
                f"{len(welds)} weld(s) were open when the daemon last stopped without closing "
                f"them (killed or aborted): {', '.join(welds)}; their results are published "
                "as degraded (interrupted)",
            )

    def _outbox_state(self, degraded: bool, message: str) -> None:
        # The error event itself is held in memory and published from there (spool.py).
        if degraded:
            self._error("outbox_degraded", message)

    def _clip_failed(self, result: WeldResult, message: str) -> None:
        self._error("clip_failed", message, station=result.station, weld_id=result.weld_id)

    # -- reload -------------------------------------------------------------------------------

    def _prepare_reload(self) -> ReloadPlan:
        return prepare_reload(self.config_path, self.cfg, self.model)

    async def _apply_reload(self, plan: ReloadPlan) -> None:
        worker = self._start_worker(plan.model)
        options = tracker_options(plan.cfg, plan.model, self.mode)
        if self.pipeline is not None:
            try:
                self.pipeline.use_model(options, worker)
            except PipelineError as exc:
                await asyncio.to_thread(worker.stop)
                raise ReloadError(str(exc)) from exc
        old_worker, old_sha = self.worker, self.model.sha256
        self.worker, self.model, self.options, self.cfg = worker, plan.model, options, plan.cfg
        if self.clips is not None:
            self.clips.store = ClipStore(plan.cfg.state_dir, plan.cfg.clips)
        elif plan.cfg.clips.policy != "none":
            log.warning("reload_needs_restart", sections=["clips"], why="clips were off")
        if old_worker is not None:
            self._old_workers[old_worker] = self._spawn(self._retire(old_worker))  # type: ignore[assignment]
        self.metrics.model(plan.model.sha256)
        if plan.needs_restart:
            log.warning("reload_needs_restart", sections=list(plan.needs_restart))
        log.info(
            "model_reloaded",
            old_sha256=old_sha,
            new_sha256=plan.model.sha256,
            welds_finishing_on_old_model=self._open_welds(),
        )
        if self._publisher is not None:
            status = status_payload_factory(__version__, plan.model.sha256, self.cfg.mqtt.client_id)
            prefix = self.cfg.mqtt.topic_prefix
            await self._publisher.publish_now(status_topic(prefix), status("online"), retain=True)
        self.notifier.status(self._status_line())

    async def _retire(self, worker: InferenceWorker) -> None:
        pipeline = self.pipeline
        if pipeline is not None:
            await pipeline.wait_unused(worker)
        await asyncio.to_thread(worker.stop)
        self._old_workers.pop(worker, None)
        log.info("old_model_released", windows=worker.counters.windows)

    def _reload_failed(self, message: str) -> None:
        self._error("reload_failed", f"model reload refused, old model kept: {message}")

    # -- operations -------------------------------------------------------------------------

    def _bind_gauges(self) -> None:
        m, publisher = self.metrics, self._publisher
        m.inference_queue_depth.set_function(self._queue_depth)
        if publisher is not None:
            m.mqtt_connected.set_function(lambda: float(publisher.counters.connected))
            m.outbox_depth.set_function(lambda: float(publisher.spool.depth))
            m.outbox_oldest_age.set_function(lambda: outbox_oldest_age_s(publisher) or 0.0)
            m.outbox_degraded.set_function(lambda: float(publisher.spool.degraded))
            m.outbox_held.set_function(lambda: float(publisher.spool.held))

    def _queue_depth(self) -> float:
        workers = [*list(self._old_workers), self.worker]
        return float(sum(w.queue_depth for w in workers if w is not None))

    def _mqtt_state(self) -> str:
        if self._publisher is None:
            return "off"
        return "connected" if self._publisher.counters.connected else "disconnected"

    def _status_line(self) -> str:
        capture = self._capture
        note = "waiting for audio device" if capture and capture.waiting_for_device else None
        return self.summary.line(self._mqtt_state(), self.model.sha256, note)

    async def _tick(self) -> None:
        next_stats = time.monotonic() + STATS_INTERVAL_S
        next_status, last_line = 0.0, ""
        while True:
            await asyncio.sleep(TICK_S)
            capture = self._capture
            copy_totals(self.metrics, capture.counters() if capture else None, self._publisher)
            now = time.monotonic()
            if not self._ready and capture is not None and capture.waiting_for_device:
                self.notifier.extend_timeout(BOOT_EXTEND_S)
            line = self._status_line()
            if line != last_line or now >= next_status:
                self.notifier.status(line)
                last_line, next_status = line, now + STATUS_INTERVAL_S
            if now >= next_stats:
                next_stats += STATS_INTERVAL_S
                self._log_stats()

    async def _feed_watchdog(self) -> None:
        w = self.cfg.watchdog
        gate = WatchdogGate(w.max_audio_age_s, w.max_pending_age_s, w.max_device_attempt_age_s)
        await feed_watchdog(
            self.notifier,
            gate,
            self._watchdog_probe,
            self.stopping,
            on_withheld=lambda _: self.metrics.watchdog_withheld.inc(),
        )

    def _watchdog_probe(self) -> WatchdogProbe:
        capture = self._capture
        return WatchdogProbe(
            last_audio_at=self._last_block_at,
            oldest_pending_at=self.pipeline.oldest_pending_at if self.pipeline else None,
            last_device_attempt_at=capture.last_failed_open_at if capture else None,
        )

    def _health_snapshot(self) -> HealthSnapshot:
        pipeline = self.pipeline  # read once: this runs on the HTTP thread
        return health_snapshot(
            last_block_at=self._last_block_at,
            pending_at=pipeline.oldest_pending_at if pipeline is not None else None,
            mqtt_enabled=self.cfg.mqtt.enabled,
            publisher=self._publisher,
        )

    def _log_stats(self) -> None:
        capture, worker = self._capture, self.worker
        log.info(
            "stats",
            capture=repr(capture.counters()) if capture else None,
            failed_device_opens=capture.failed_opens if capture else 0,
            inference=worker.counters.as_dict() if worker else None,
            pipeline=self.pipeline.counters.as_dict() if self.pipeline else None,
            malformed_triggers=self.malformed_triggers,
            malformed_commands=self.malformed_commands,
            reloads=(self.reloader.succeeded, self.reloader.failures),
            clips=self.clips.counters if self.clips else None,
            notify_send_failures=self.notifier.send_failures,
        )


def run_daemon(cfg: MonitorConfig, model: DeployModel, config_path: Path | None = None) -> int:
    """Run the daemon in a fresh event loop; returns the exit code. `config_path` is re-read
    on reload (None: reload re-reads the model only)."""
    try:
        return asyncio.run(Daemon(cfg, model, config_path).run())
    except OutboxOpenError as exc:  # before any weld: restarting would meet the same file
        log.error("daemon_failed", error=str(exc))
        print(f"weldmon run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WeldmonError as exc:
        log.error("daemon_failed", error=str(exc))
        print(f"weldmon run: {exc}", file=sys.stderr)
        return EXIT_FAILURE
