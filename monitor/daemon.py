"""`weldmon run`: the real-time daemon, as wiring of the rooms.

It starts, in order, the inference worker (`monitor.pipeline.inference`), /metrics and
/healthz (`monitor.ops`), the MQTT link (`monitor.publish`), the capture thread
(`monitor.audio`) and the status and watchdog loops, all on one `AsyncExitStack`, and feeds
every captured block through the pipeline (`monitor.pipeline.core`). SIGTERM/SIGINT unwind the
stack in reverse: capture stops, the windows already cut are judged, open welds close as
`interrupted`, clips land, the outbox is flushed and `stopped` published; exit 0 within
`stop_timeout_s`. SIGHUP and ``{prefix}/cmd/reload`` reload the model (monitor/reload.py);
``{prefix}/cmd/teach`` teaches a station its threshold from its own good welds (monitor/teach).
An optional shadow model (config ``shadow``) judges the same windows after production and
publishes only on ``{prefix}/{station}/shadow/result``, straight to the broker (never the
outbox, never OPC UA, never an alert): `monitor.pipeline.shadow`.
Threads, queues and overload: docs/monitor.md.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog

from deploy.loader import DeployModel
from monitor.audio.blocks import AudioBlock
from monitor.audio.capture_thread import CaptureThread, Lost, Opened
from monitor.config import (
    DEFAULT_SHADOW_QUEUE_WINDOWS,
    DEFAULT_SHADOW_TIMEOUT_S,
    MonitorConfig,
)
from monitor.events import DegradedReason, EndReason, ErrorCode, Source, WeldResult
from monitor.events.shadow import (
    SHADOW_QOS,
    SHADOW_RETAINED,
    ModelChange,
    ShadowResult,
    model_change_topic,
    shadow_topic,
)
from monitor.events.teach import TeachCommand, teach_reply_topic
from monitor.ops.clips import ClipWriter
from monitor.ops.notify import WatchdogGate
from monitor.ops.shadow_metrics import register_shadow_metrics
from monitor.ops.status import Operations
from monitor.ops.teach_metrics import register_teach_metrics
from monitor.pipeline.core import Pipeline
from monitor.pipeline.inbox import PipelineInbox
from monitor.pipeline.inference import InferenceWorker, ModelWorkers
from monitor.pipeline.shadow import ShadowJudge
from monitor.promote import ModelLifecycle
from monitor.publish.commands import CommandHandlers, CommandRouter
from monitor.publish.publisher import MqttPublisher
from monitor.publish.router import EventRouter, log_event
from monitor.reload import Reloader, prepare_reload, swap_in
from monitor.runtime import (
    error_event,
    mqtt_link,
    pipeline_settings,
    report_interrupted_welds,
    shadow_options,
    signal_handlers,
    tracker_options,
)
from monitor.segment.factory import RULES, require_live
from monitor.teach.station import TeachIn
from weldmon.cli import EXIT_OK

log = structlog.get_logger(__name__)
RELOAD_REFUSED = "model reload refused, old model kept: "  # + why, in the error event


class Daemon:
    """The running monitor: capture thread -> pipeline -> events, plus operations."""

    def __init__(
        self,
        cfg: MonitorConfig,
        model: DeployModel,
        config_path: Path | None = None,
        shadow_model: DeployModel | None = None,
    ) -> None:
        require_live(cfg.segmentation.mode)
        self.cfg, self.model, self.config_path = cfg, model, config_path
        self.shadow_model = shadow_model  # loaded by `monitor.runtime.load_shadow`
        queue_windows, timeout_s = DEFAULT_SHADOW_QUEUE_WINDOWS, DEFAULT_SHADOW_TIMEOUT_S
        if cfg.shadow is not None:
            queue_windows, timeout_s = cfg.shadow.queue_windows, cfg.shadow.timeout_s
        self.shadow = ShadowJudge(self._shadow_result, queue_windows, timeout_s)
        self.shadow_results_lost = 0  # shadow verdicts the broker did not take (not retried)
        self.settings = pipeline_settings(cfg)
        # teach-in (monitor/teach): before the options, whose welds consult it
        self.teach = TeachIn(
            self.settings.stations,
            cfg.teach_in,
            cfg.state_dir,
            self._teach_void,
            lambda message, station: self._error(ErrorCode.RECALIBRATE, message, station=station),
        )
        self.options = tracker_options(cfg, model, cfg.segmentation.mode, self.teach)
        self.ops = Operations(
            model.sha256,
            self.settings.stations,
            cfg.audio.channel_stations(),
            cfg.audio.silence_alarm_s,
        )
        self.workers = ModelWorkers(cfg.inference.max_batch_windows, cfg.inference.queue_windows)
        self.reloader = Reloader(
            lambda: prepare_reload(self.config_path, self.cfg, self.model),
            lambda plan: swap_in(self, plan),
            lambda why: self._error(ErrorCode.RELOAD_FAILED, RELOAD_REFUSED + why),
        )
        self.lifecycle = ModelLifecycle(self, self._model_changed)  # promote / rollback
        self.clips = ClipWriter.for_config(
            cfg.clips, cfg.state_dir, model.sample_rate, self._clip_failed
        )
        # The MQTT sink joins (first, durable) once the link is up; OPC UA when it serves.
        self.events = EventRouter([log_event, self.ops.on_event, self.teach.observe])
        inbox = self.inbox = PipelineInbox(lambda: self.pipeline)
        handlers = CommandHandlers(
            reload=self.reloader.request,
            trigger=inbox.trigger,
            part=inbox.part,
            homeassistant_birth=self._rediscover,
            malformed=self.ops.metrics.malformed,
            process=inbox.process,
            model=self.lifecycle.request,
            teach=self._teach,
        )
        self.commands = CommandRouter(
            cfg.mqtt.topic_prefix,
            cfg.homeassistant,
            self.settings.stations,
            handlers,
            triggers=RULES[cfg.segmentation.mode].triggers,
            process=cfg.process.enabled,
        )
        self.stopping = asyncio.Event()
        self.pipeline: Pipeline | None = None
        self._pipeline_scope = AsyncExitStack()
        self.capture: CaptureThread | None = None
        self.publisher: MqttPublisher | None = None
        self._voided: list[tuple[str, str | None]] = []  # teach-in voids before the link is up
        self.teach.bind(self.options.model)  # the stored calibrations of this model
        self.ready = False  # the first block was fed
        self.last_block_at: float | None = None  # time.monotonic() of the latest block
        self._source: Source | None = None
        self._background: set[asyncio.Task[object]] = set()

    async def run(self) -> int:
        """Run until stopped; returns the exit code."""
        loop, cfg = asyncio.get_running_loop(), self.cfg
        stop, reload = self.request_stop, lambda: self.reloader.request("SIGHUP")
        async with AsyncExitStack() as stack:
            signals = {signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: reload}
            stack.enter_context(signal_handlers(loop, signals))
            stack.callback(self.workers.stop_all)
            self.workers.use(self.workers.start(self.model), self.unused)
            if self.shadow_model is not None:
                self.shadow.use(self.shadow_model, shadow_options(cfg, self.shadow_model))
            health = self.ops.http(cfg.http, lambda: self.ops.health(self, cfg.mqtt.enabled))
            http_error = await stack.enter_async_context(health)
            link = mqtt_link(
                cfg,
                lambda: self.model.sha256,
                on_message=self.commands,
                subscriptions=self.commands.subscriptions,
                connect_messages=self.commands.discovery,
                report=self._report,
            )
            self.publisher = await stack.enter_async_context(link)
            if self.publisher is not None:
                self.events.add(self.publisher.send, durable=True)
            report_interrupted_welds(self.publisher, self.events, self._report)
            self.ops.bind_gauges(self.workers.queue_depth, self.publisher)
            register_shadow_metrics(self.ops.metrics.registry, self.shadow_totals)
            register_teach_metrics(
                self.ops.metrics.registry,
                self.teach.snapshot,
                lambda: {"applied": self.teach.applied, "refused": self.teach.refused},
                self.teach.drift_snapshot,
            )
            for message, station in self._voided:  # found at start, before the outbox was open
                self._error(ErrorCode.TEACH_IN_VOID, message, station=station)
            self._voided.clear()
            if http_error is not None:
                self._error(ErrorCode.HTTP_UNAVAILABLE, http_error)
            if cfg.opcua.enabled:
                opcua = self.ops.opcua(cfg.opcua, self.settings.stations, cfg.http, self._report)
                self.events.add(await stack.enter_async_context(opcua))
            # after the pipeline, before the publisher: the last welds' shadow verdicts go out
            stack.push_async_callback(self.shadow.close)
            if self.clips is not None:  # closes after the pipeline: the last results keep clips
                stack.push_async_callback(self.clips.close, cfg.stop_timeout_s / 4)
            stack.push_async_callback(self.reloader.close)
            stack.push_async_callback(self.lifecycle.close)
            stack.push_async_callback(
                self._close_pipeline, EndReason.SHUTDOWN, DegradedReason.INTERRUPTED
            )
            capture = self.capture = CaptureThread(cfg.audio, loop)
            capture.start()
            stack.push_async_callback(asyncio.to_thread, capture.join, cfg.stop_timeout_s / 4)
            gate = WatchdogGate(**cfg.watchdog.model_dump())
            for job in (self.ops.report(self), self.ops.keep_watchdog(gate, self, self.stopping)):
                stack.callback(self._spawn(job).cancel)
            stack.callback(self.request_stop)
            async for item in capture.until(self.stopping):
                await self._handle(item)
        log.info("stopped", events=self.events.counts)
        return EXIT_OK

    def request_stop(self) -> None:
        """Begin a clean shutdown (signal handler)."""
        if not self.stopping.is_set():
            log.info("stop_requested")
            self.ops.notifier.stopping("stopping: finishing welds, flushing events")
        self.stopping.set()

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> asyncio.Task[object]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- audio --------------------------------------------------------------------------------

    async def _handle(self, item: AudioBlock | Lost | Opened) -> None:
        if isinstance(item, Opened):
            self._source = Source(type="device", name=item.device_name)
            self.ops.device_opened()
            if self.pipeline is None or self.pipeline.source_rate != item.sample_rate:
                await self._close_pipeline(EndReason.DEVICE_LOST, DegradedReason.DEVICE_LOST)
                assert self.workers.current is not None  # started before the capture
                pipeline = Pipeline(
                    self.settings,
                    self.options,
                    self.workers.current,
                    self.events,
                    item.sample_rate,
                    weld_audio=self.clips,
                    on_window=self.ops.metrics.window_inferred,
                    observer=self.shadow,
                )
                self.pipeline = await self._pipeline_scope.enter_async_context(pipeline)
        elif isinstance(item, Lost):
            self.ops.metrics.device(is_open=False)
            self._error(ErrorCode.DEVICE_LOST, item.message)
            if self.pipeline is not None:
                log.error("device_lost", error=item.message, open_welds=self.pipeline.open_welds)
                await self.pipeline.end_stream(EndReason.DEVICE_LOST, DegradedReason.DEVICE_LOST)
        else:
            assert self.pipeline is not None and self._source is not None
            self.last_block_at = time.monotonic()
            for station, message in self.ops.on_block(item):
                self._error(ErrorCode.DEAD_MICROPHONE, message, station=station)
            await self.pipeline.feed(item, self._source)
            if self.capture is not None:
                self.capture.idle = not self.pipeline.open_welds
            if not self.ready:
                self.ready = True
                log.info("ready", device=self._source.name, sample_rate=item.sample_rate)
                self.ops.notifier.ready(self.ops.status_line(self))

    async def _close_pipeline(self, end_reason: EndReason, degraded: DegradedReason) -> None:
        if self.pipeline is not None:
            await self.pipeline.end_stream(end_reason, degraded)
            await self._pipeline_scope.aclose()
            self.pipeline = None

    @property
    def oldest_pending_at(self) -> float | None:
        """When the oldest window awaiting inference was submitted (watchdog, /healthz)."""
        pipeline = self.pipeline  # read once: /healthz runs on the HTTP thread
        return pipeline.oldest_pending_at if pipeline is not None else None

    # -- Home Assistant and outbound events --------------------------------------------------------

    def _rediscover(self) -> None:
        if self.publisher is not None:
            discovery = self.commands.discovery()
            self._spawn(self.publisher.publish_all(discovery, "homeassistant_discovery"))

    def _error(self, code: ErrorCode, message: str, **fields: Any) -> None:
        model = self.options.model
        self.events(error_event(model, code, message, source=self._source, **fields))

    def _report(self, code: ErrorCode | str, message: str) -> None:
        self._error(ErrorCode(code), message)

    def _shadow_result(self, result: ShadowResult) -> None:
        log.info(
            "shadow_result",
            weld_id=result.weld_id,
            station=result.station,
            label=result.label_name,
            p_defect=round(result.p_defect, 6),
            agree=result.agree,
            complete=result.complete,
        )
        if self.publisher is not None:
            self._spawn(self._publish_shadow(self.publisher, result))

    async def _publish_shadow(self, publisher: MqttPublisher, result: ShadowResult) -> None:
        topic = shadow_topic(self.cfg.mqtt.topic_prefix, result.station)
        payload = result.to_json()
        if not await publisher.publish_now(topic, payload, qos=SHADOW_QOS, retain=SHADOW_RETAINED):
            self.shadow_results_lost += 1  # by design: only production verdicts are durable
            log.warning("shadow_result_lost", weld_id=result.weld_id, station=result.station)

    def _model_changed(self, change: ModelChange) -> None:
        if self.publisher is not None:  # durable, like a verdict: the change is an audit fact
            topic = model_change_topic(self.cfg.mqtt.topic_prefix)
            self.publisher.send_message(topic, change.to_json(), change.event_id)

    def _teach(self, command: TeachCommand) -> None:
        reply = self.teach.handle(command)
        if self.publisher is not None:  # durable, like a model change: an accept is an audit fact
            topic = teach_reply_topic(self.cfg.mqtt.topic_prefix)
            self.publisher.send_message(topic, reply.to_json(), reply.event_id)

    def _teach_void(self, message: str, station: str | None) -> None:
        if self.publisher is None:
            self._voided.append((message, station))
        else:
            self._error(ErrorCode.TEACH_IN_VOID, message, station=station)

    def _clip_failed(self, result: WeldResult, message: str) -> None:
        self._error(ErrorCode.CLIP_FAILED, message, station=result.station, weld_id=result.weld_id)

    # -- reload and stats ---------------------------------------------------------------------

    async def unused(self, worker: InferenceWorker) -> None:
        """Return once no weld started on `worker` waits for its result (a retiring worker)."""
        if self.pipeline is not None:
            await self.pipeline.wait_unused(worker)

    def pipeline_counts(self) -> dict[str, int]:
        """The running pipeline's counters (none before the first audio) and what the inbox
        dropped before there was one."""
        pipeline = self.pipeline
        return {**(pipeline.counts() if pipeline else {}), **self.inbox.counts()}

    def shadow_totals(self) -> dict[str, float]:
        """The shadow's and production's inference totals (/metrics, on the HTTP thread)."""
        shadow, counters = self.shadow, self.shadow.counters
        return {
            "shadow_cpu_seconds": shadow.cpu_s,
            "shadow_windows": counters.windows,
            "shadow_windows_skipped": counters.windows_skipped,
            "shadow_windows_failed": counters.windows_failed,
            "shadow_results": counters.results,
            "shadow_results_lost": self.shadow_results_lost,
            "inference_cpu_seconds": self.workers.cpu_s(),
            "shadow_loaded": float(shadow.sha256 is not None),
        }

    def stats(self) -> dict[str, object]:
        """The counters of the daemon's own parts, for the stats log line."""
        worker, pipeline = self.workers.current, self.pipeline
        return {
            "inference": worker.counters.as_dict() if worker else None,
            "pipeline": pipeline.counts() if pipeline else None,
            "reloads": (self.reloader.succeeded, self.reloader.failures),
            "clips": self.clips.stats() if self.clips else None,
            "shadow": {
                **self.shadow.counters.as_dict(),
                "results_lost": self.shadow_results_lost,
                "cpu_s": round(self.shadow.cpu_s, 3),
            }
            if self.shadow.sha256 is not None
            else None,
        }
