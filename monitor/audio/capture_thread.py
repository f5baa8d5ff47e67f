"""The daemon's capture thread: owns the `SoundDeviceCapture`, feeds blocks to the event loop.

It opens the device (waiting for it at boot), reads blocks and hands them to the loop through
a bounded asyncio queue; when the loop falls behind, it waits, the ring fills, and the ring
counts the drops. A lost device is handed over as a `Lost` item after the audio already
captured, then reopened with capped, doubling back-off; every reopen re-initialises PortAudio
so a re-plugged device (or a re-created PulseAudio sink) is found.

The retry loop is written here rather than calling `SoundDeviceCapture.wait_for_device`
because the watchdog needs the time of each failed attempt (`last_failed_open_at`): a device
that is missing while we keep trying is an outage we report, not a hang that a restart would
fix, so the watchdog keeps being fed; a device that opens but delivers nothing stops the
pings after `watchdog.max_audio_age_s`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import numpy as np
import structlog

from monitor.audio.blocks import AudioBlock
from monitor.audio.capture import (
    CaptureCounters,
    CaptureSettings,
    DeviceLostError,
    SoundDeviceCapture,
)
from monitor.audio.devices import AudioDeviceError
from monitor.config import MonitorConfig

BLOCK_QUEUE_DEPTH = 32  # blocks between the capture thread and the loop (~3 s at 0.1 s)
READ_TIMEOUT_S = 0.25  # capture read poll: how quickly the capture thread sees a stop
QUEUE_FULL_POLL_S = 0.01  # s between looks at a full loop queue (the ring holds the audio)
BACKOFF_FACTOR = 2.0  # each failed open doubles the wait, up to audio.retry_max_s
FAILED_OPEN_LOG_EVERY = 10  # log the 1st, 11th, 21st... failed open of one outage
# s a block may wait for the next callback's audio to join it (up to audio.block_s): most of
# the pipeline's cost is per block, so two 50 ms callbacks in one block cost about half, and
# this bounds the latency that adds (one 50 ms callback period plus 10 ms of jitter).
COALESCE_WAIT_S = 0.06

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Lost:
    """The device stopped delivering audio."""

    message: str


@dataclass(frozen=True)
class Opened:
    """A stream epoch started on this device."""

    device_name: str
    sample_rate: int


CaptureItem = AudioBlock | Lost | Opened


class CaptureThread:
    """Owns the sound device; feeds blocks (and loss/open notices) to the event loop."""

    def __init__(self, cfg: MonitorConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self.items: asyncio.Queue[CaptureItem] = asyncio.Queue(maxsize=BLOCK_QUEUE_DEPTH)
        self.stop = threading.Event()
        self.capture = SoundDeviceCapture(
            CaptureSettings(
                device=cfg.audio.device,
                channels=cfg.audio.channels,
                sample_rate_hz=cfg.audio.samplerate,
                ring_s=cfg.audio.ring_s,
            )
        )
        # time.monotonic() of the latest failed open (None while the device is open or was
        # never missing); read by the watchdog probe on the loop thread.
        self.last_failed_open_at: float | None = None
        self.failed_opens = 0  # total, for the stats line
        self._scheduled = 0  # items handed to the loop (capture thread writes)
        self._landed = 0  # of those, items in the queue or taken (loop writes)
        self._thread = threading.Thread(target=self._run, name="weldmon-capture", daemon=True)

    @property
    def waiting_for_device(self) -> bool:
        """Whether the latest open attempt failed (the device is missing right now)."""
        return self.last_failed_open_at is not None

    def counters(self) -> CaptureCounters:
        """The capture's running totals (a cheap snapshot)."""
        return self.capture.counters()

    def start(self) -> None:
        """Start capturing."""
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        """Ask the thread to stop and wait for it."""
        self.stop.set()
        self._thread.join(timeout_s)

    def _put(self, item: CaptureItem) -> None:
        # Waits while the loop's queue is full: back-pressure into the ring. A plain
        # call_soon_threadsafe costs a fraction of run_coroutine_threadsafe's task and future
        # chain, paid on every block. Only this thread puts, so once the queue plus the puts
        # still scheduled on the loop leave room, the put_nowait below cannot overflow.
        while self.items.qsize() + self._scheduled - self._landed >= BLOCK_QUEUE_DEPTH:
            if self.stop.wait(QUEUE_FULL_POLL_S):
                return
        self._scheduled += 1
        self.loop.call_soon_threadsafe(self._land, item)

    def _land(self, item: CaptureItem) -> None:
        # On the loop: the queue has room (see _put).
        self.items.put_nowait(item)
        self._landed += 1

    def _open_until_it_works(self, first: bool) -> bool:
        """Open (first) or reopen the device, retrying with back-off; False if stopped."""
        a = self.cfg.audio
        backoff = a.retry_min_s
        failures = 0
        while not self.stop.is_set():
            try:
                if first:
                    self.capture.open()
                else:
                    self.capture.reopen()
                self.last_failed_open_at = None
                if failures:
                    log.info("capture_device_back", failed_attempts=failures)
                return True
            except AudioDeviceError as exc:
                failures += 1
                self.failed_opens += 1
                self.last_failed_open_at = time.monotonic()
                if failures % FAILED_OPEN_LOG_EVERY == 1:
                    event = "capture_waiting_for_device" if first else "capture_reopen_failed"
                    log.warning(event, attempt=failures, retry_in_s=backoff, error=str(exc))
                first = False  # later attempts re-initialise PortAudio (reopen)
            if self.stop.wait(backoff):
                return False
            backoff = min(backoff * BACKOFF_FACTOR, a.retry_max_s)
        return False

    def _run(self) -> None:
        first = True
        try:
            while not self.stop.is_set():
                if not self._open_until_it_works(first):
                    return
                first = False
                self._put(Opened(self.capture.device.name, self.capture.sample_rate))
                max_frames = max(1, round(self.cfg.audio.block_s * self.capture.sample_rate))
                reader = CoalescingReader(self.capture, max_frames, COALESCE_WAIT_S)
                try:
                    while not self.stop.is_set():
                        block = reader.read(READ_TIMEOUT_S)
                        if block is not None:
                            self._put(block)
                except DeviceLostError as exc:
                    self._put(Lost(str(exc)))
        finally:
            self.capture.close()


class CoalescingReader:
    """Reads blocks of up to `max_frames` from one stream epoch, joining consecutive reads
    that arrive within `wait_s` of the first. A read that does not continue the block (a
    drop in between) is held for the next call; a loss seen while joining is raised on the
    next call, after the audio already read was handed out."""

    def __init__(self, capture: SoundDeviceCapture, max_frames: int, wait_s: float) -> None:
        self.capture = capture
        self.max_frames = max_frames
        self.wait_s = wait_s
        self._held: AudioBlock | None = None
        self._loss: DeviceLostError | None = None
        self.joined = 0  # reads merged into an earlier one (for tests and the curious)

    def read(self, timeout_s: float) -> AudioBlock | None:
        """The next block, or None after `timeout_s` without audio; DeviceLostError once the
        stream is lost and everything captured before was returned."""
        if self._held is not None:
            first, self._held = self._held, None
        elif self._loss is not None:
            raise self._loss
        else:
            first = self.capture.read(timeout_s, self.max_frames)
            if first is None:
                return None
        parts = [first]
        frames = first.frames
        deadline = time.monotonic() + self.wait_s
        while frames < self.max_frames:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                more = self.capture.read(left, self.max_frames - frames)
            except DeviceLostError as exc:
                self._loss = exc
                break
            if more is None:
                break
            if more.dropped_frames or more.start_frame != first.start_frame + frames:
                self._held = more
                break
            parts.append(more)
            frames += more.frames
        if len(parts) == 1:
            return first
        self.joined += len(parts) - 1
        return AudioBlock(
            samples=np.concatenate([p.samples for p in parts]),
            start_frame=first.start_frame,
            sample_rate=first.sample_rate,
            stream_epoch=first.stream_epoch,
            epoch_utc=parts[-1].epoch_utc,  # the latest (most refined) estimate
            dropped_frames=first.dropped_frames,
            nonfinite_samples=sum(p.nonfinite_samples for p in parts),
        )
