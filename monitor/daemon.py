"""`weldmon run`: the real-time daemon.

Threads and ownership:
  * PortAudio's callback thread (inside `SoundDeviceCapture`) copies audio into the ring.
  * The capture thread (`_CaptureThread`) owns the `SoundDeviceCapture`: it opens the device
    (waiting for it at boot), reads blocks and hands them to the event loop through a bounded
    queue; when the loop falls behind, it waits, the ring fills, and the ring counts the drops.
    A lost device is reported as an item, then reopened with capped back-off (PortAudio is
    re-initialised so a re-plugged device is found).
  * The inference thread (`InferenceWorker`) owns the model and torch.
  * The event loop runs the pipeline, the MQTT publisher and the signal handlers.

Stop (SIGTERM/SIGINT): capture stops, the windows already cut are judged, open welds are
closed as `interrupted`, the outbox is flushed as far as the broker allows and `stopped` is
published; exit 0, within `stop_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass

import structlog

from deploy.errors import WeldmonError
from deploy.loader import DeployModel
from monitor.blocks import AudioBlock
from monitor.capture import CaptureSettings, DeviceLostError, SoundDeviceCapture
from monitor.config import MonitorConfig
from monitor.devices import AudioDeviceError
from monitor.events import (
    ErrorEvent,
    MalformedMessageError,
    Source,
    parse_trigger,
    station_from_trigger_topic,
    trigger_subscription,
)
from monitor.inference import InferenceWorker
from monitor.pipeline import Pipeline
from monitor.runtime import EventRouter, mqtt_link, pipeline_settings, tracker_options
from weldmon import __version__
from weldmon.cli import EXIT_FAILURE, EXIT_OK

BLOCK_QUEUE_DEPTH = 32  # blocks between the capture thread and the loop (~3 s at 0.1 s)
READ_TIMEOUT_S = 0.25  # capture read poll: how quickly the capture thread sees a stop
STATS_INTERVAL_S = 60.0  # one stats log line per minute

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Lost:
    """The device stopped delivering audio."""

    message: str


@dataclass(frozen=True)
class _Opened:
    """A stream epoch started on this device."""

    device_name: str
    sample_rate: int


class _CaptureThread:
    """Owns the sound device; feeds blocks (and loss/open notices) to the event loop."""

    def __init__(self, cfg: MonitorConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self.items: asyncio.Queue[AudioBlock | _Lost | _Opened] = asyncio.Queue(
            maxsize=BLOCK_QUEUE_DEPTH
        )
        self.stop = threading.Event()
        self.capture = SoundDeviceCapture(
            CaptureSettings(
                device=cfg.audio.device,
                channels=cfg.audio.channels,
                sample_rate_hz=cfg.audio.samplerate,
                ring_s=cfg.audio.ring_s,
            )
        )
        self._thread = threading.Thread(target=self._run, name="weldmon-capture", daemon=True)

    def start(self) -> None:
        """Start capturing."""
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        """Ask the thread to stop and wait for it."""
        self.stop.set()
        self._thread.join(timeout_s)

    def _put(self, item: AudioBlock | _Lost | _Opened) -> None:
        # Blocks this thread while the loop's queue is full: back-pressure into the ring.
        future = asyncio.run_coroutine_threadsafe(self.items.put(item), self.loop)
        while not self.stop.is_set():
            try:
                future.result(timeout=READ_TIMEOUT_S)
                return
            except TimeoutError:
                continue
        future.cancel()

    def _open(self, first: bool) -> bool:
        a = self.cfg.audio
        try:
            if first:
                try:
                    self.capture.open()
                    return True
                except AudioDeviceError as exc:
                    log.warning("capture_waiting_for_device", error=str(exc))
            return self.capture.wait_for_device(
                math.inf,
                initial_backoff_s=a.retry_min_s,
                max_backoff_s=a.retry_max_s,
                stop=self.stop,
            )
        except AudioDeviceError as exc:  # should not happen with an infinite wait
            log.error("capture_open_failed", error=str(exc))
            return False

    def _run(self) -> None:
        first = True
        try:
            while not self.stop.is_set():
                if not self._open(first):
                    return
                first = False
                self._put(_Opened(self.capture.device.name, self.capture.sample_rate))
                max_frames = max(1, round(self.cfg.audio.block_s * self.capture.sample_rate))
                try:
                    while not self.stop.is_set():
                        block = self.capture.read(READ_TIMEOUT_S, max_frames)
                        if block is not None:
                            self._put(block)
                except DeviceLostError as exc:
                    self._put(_Lost(str(exc)))
        finally:
            self.capture.close()


class Daemon:
    """The running monitor: capture thread -> pipeline -> events."""

    def __init__(self, cfg: MonitorConfig, model: DeployModel) -> None:
        self.cfg = cfg
        self.model = model
        self.mode = cfg.segmentation.mode
        if self.mode == "file":
            raise WeldmonError("segmentation.mode: 'file' is for replay; use gate or trigger")
        self.options = tracker_options(cfg, model, self.mode)
        self.settings = pipeline_settings(cfg)
        self.stopping = asyncio.Event()
        self.pipeline: Pipeline | None = None
        self.malformed_triggers = 0
        self._router = EventRouter()
        self._source: Source | None = None

    def request_stop(self) -> None:
        """Begin a clean shutdown (signal handler)."""
        if not self.stopping.is_set():
            log.info("stop_requested")
        self.stopping.set()

    def on_message(self, topic: str, payload: bytes) -> None:
        """Inbound MQTT: trigger messages for trigger mode; anything malformed is counted."""
        try:
            station = station_from_trigger_topic(topic, self.cfg.mqtt.topic_prefix)
            trigger = parse_trigger(payload)
        except MalformedMessageError as exc:
            self.malformed_triggers += 1
            log.warning("malformed_trigger", topic=topic, error=str(exc))
            return
        if self.pipeline is None or not self.pipeline.push_trigger(
            station, trigger.state, time.time()
        ):
            log.warning("trigger_ignored", station=station, state=trigger.state)

    async def run(self) -> int:
        """Run until stopped; returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        subs = [trigger_subscription(self.cfg.mqtt.topic_prefix)] if self.mode == "trigger" else []
        worker = InferenceWorker(
            self.model, self.cfg.inference.max_batch_windows, self.cfg.inference.queue_windows
        )
        capture = _CaptureThread(self.cfg, loop)
        async with mqtt_link(
            self.cfg, self.model.sha256, on_message=self.on_message, subscriptions=subs
        ) as publisher:
            self._router.publisher = publisher
            with worker:
                capture.start()
                try:
                    await self._serve(capture, worker)
                finally:
                    await asyncio.to_thread(capture.join, self.cfg.stop_timeout_s / 4)
                    if self.pipeline is not None:
                        await self.pipeline.end_stream("shutdown", "interrupted")
                        await self.pipeline.__aexit__(None, None, None)
        log.info("stopped", events=self._router.counts)
        return EXIT_OK

    async def _serve(self, capture: _CaptureThread, worker: InferenceWorker) -> None:
        stop_wait = asyncio.ensure_future(self.stopping.wait())
        next_stats = time.monotonic() + STATS_INTERVAL_S
        try:
            while True:
                get = asyncio.ensure_future(capture.items.get())
                done, _ = await asyncio.wait({get, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    return
                await self._handle(get.result(), worker)
                if time.monotonic() >= next_stats:
                    next_stats += STATS_INTERVAL_S
                    self._log_stats(capture, worker)
        finally:
            stop_wait.cancel()

    async def _handle(self, item: AudioBlock | _Lost | _Opened, worker: InferenceWorker) -> None:
        if isinstance(item, _Opened):
            self._source = Source(type="device", name=item.device_name)
            if self.pipeline is None or self.pipeline.source_rate != item.sample_rate:
                await self._close_pipeline("device_lost", "device_lost")
                self.pipeline = Pipeline(
                    self.settings, self.options, worker, self._router, item.sample_rate
                )
                await self.pipeline.__aenter__()
            return
        if isinstance(item, _Lost):
            log.error("device_lost", error=item.message, open_welds=self._open_welds())
            self._router(
                ErrorEvent(
                    daemon_version=__version__,
                    model_sha256=self.model.sha256,
                    code="device_lost",
                    message=item.message,
                    source=self._source,
                )
            )
            if self.pipeline is not None:
                await self.pipeline.end_stream("device_lost", "device_lost")
            return
        assert self.pipeline is not None and self._source is not None
        await self.pipeline.feed(item, self._source)

    def _open_welds(self) -> list[str]:
        return self.pipeline.open_welds if self.pipeline is not None else []

    async def _close_pipeline(self, end_reason: str, degraded: str) -> None:
        if self.pipeline is not None:
            await self.pipeline.end_stream(end_reason, degraded)  # type: ignore[arg-type]
            await self.pipeline.__aexit__(None, None, None)
            self.pipeline = None

    def _log_stats(self, capture: _CaptureThread, worker: InferenceWorker) -> None:
        log.info(
            "stats",
            capture=capture.capture.counters().__repr__(),
            inference=worker.counters.as_dict(),
            pipeline=self.pipeline.counters.as_dict() if self.pipeline else None,
            malformed_triggers=self.malformed_triggers,
        )


def run_daemon(cfg: MonitorConfig, model: DeployModel) -> int:
    """Run the daemon in a fresh event loop; returns the exit code."""
    try:
        return asyncio.run(Daemon(cfg, model).run())
    except WeldmonError as exc:
        log.error("daemon_failed", error=str(exc))
        with contextlib.suppress(Exception):
            print(f"weldmon: {exc}")
        return EXIT_FAILURE
