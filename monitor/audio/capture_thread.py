"""The daemon's capture thread: owns the `SoundDeviceCapture`, feeds blocks to the event loop.

It opens the device (waiting for it at boot), reads blocks and hands them to the loop through
a bounded asyncio queue, which the loop reads with ``async for item in thread.until(stop)``;
when the loop falls behind, the thread waits, the ring fills, and the ring counts the drops.
A lost device is handed over as a `Lost` item after the audio already captured, then
reopened by `SoundDeviceCapture.wait_for_device` (capped exponential back-off with jitter);
every reopen re-initialises PortAudio so a re-plugged device (or a re-created PulseAudio
sink) is found.

The watchdog needs the time of each failed attempt (`last_failed_open_at`): a device that is
missing while we keep trying is an outage we report, not a hang that a restart would fix, so
the watchdog keeps being fed; a device that opens but delivers nothing stops the pings after
`watchdog.max_audio_age_s`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import structlog

from monitor.audio.blocks import AudioBlock
from monitor.audio.capture import CaptureCounters, DeviceLostError, SoundDeviceCapture
from monitor.audio.config import AudioConfig
from monitor.audio.devices import AudioDeviceError

BLOCK_QUEUE_DEPTH = 32  # blocks between the capture thread and the loop (~3 s at 0.1 s)
READ_TIMEOUT_S = 0.25  # capture read poll beyond a block: how quickly the thread sees a stop
QUEUE_FULL_POLL_S = 0.01  # s between looks at a full loop queue (the ring holds the audio)
# s a block may wait for the next callback's audio to join it (up to audio.block_s): most of
# the pipeline's cost is per block, so two 50 ms callbacks joined into one block cost less
# (docs/benchmarks.md, round 2), and this bounds the latency that adds (one 50 ms callback
# period plus 10 ms of jitter).
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

    def __init__(self, cfg: AudioConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self.items: asyncio.Queue[CaptureItem] = asyncio.Queue(maxsize=BLOCK_QUEUE_DEPTH)
        self.stop = threading.Event()
        self.capture = SoundDeviceCapture(cfg)
        # time.monotonic() of the latest failed open (None while the device is open or was
        # never missing); read by the watchdog probe on the loop thread.
        self.last_failed_open_at: float | None = None
        self.failed_opens = 0  # total, for the stats line
        self._scheduled = 0  # items handed to the loop (capture thread writes)
        self._landed = 0  # of those, items in the queue or taken (loop writes)
        self._thread = threading.Thread(target=self._run, name="weldmon-capture", daemon=True)
        # Written by the loop after each block (a bool: atomic), read here before each read:
        # whether no station has a weld open, so blocks may be idle_block_s long.
        self.idle = True

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

    def _failed_open(self, exc: AudioDeviceError) -> None:
        self.failed_opens += 1
        self.last_failed_open_at = time.monotonic()

    async def until(self, stop: asyncio.Event) -> AsyncIterator[CaptureItem]:
        """The items as they land (event loop), until `stop` is set."""
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while True:
                get = asyncio.ensure_future(self.items.get())
                done, _ = await asyncio.wait({get, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    return
                yield get.result()
        finally:
            stop_wait.cancel()

    def _run(self) -> None:
        initial = True
        try:
            while not self.stop.is_set():
                opened = self.capture.wait_for_device(
                    stop=self.stop, on_failure=self._failed_open, initial=initial
                )
                if not opened:
                    return
                initial = False
                self.last_failed_open_at = None
                self._put(Opened(self.capture.device.name, self.capture.sample_rate))
                rate = self.capture.sample_rate
                reader = CoalescingReader(self.capture, self.cfg.block_frames(rate, True))
                try:
                    while not self.stop.is_set():
                        reader.max_frames = self.cfg.block_frames(rate, self.idle)
                        block = reader.read(READ_TIMEOUT_S + reader.max_frames / rate)
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

    def __init__(
        self, capture: SoundDeviceCapture, max_frames: int, wait_s: float = COALESCE_WAIT_S
    ) -> None:
        self.capture = capture
        self.max_frames = max_frames
        self.wait_s = wait_s
        self._held: AudioBlock | None = None
        self._loss: DeviceLostError | None = None
        self.joined = 0  # reads merged into an earlier one (for tests and the curious)

    def read(self, timeout_s: float) -> AudioBlock | None:
        """The next block, or None after `timeout_s` without audio; DeviceLostError once the
        stream is lost and everything captured before was returned."""
        first: AudioBlock | None
        if self._held is not None:
            first, self._held = self._held, None
        elif self._loss is not None:
            raise self._loss
        else:
            first = self.capture.read(timeout_s, self.max_frames, wait_for=self.max_frames)
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
