"""Live audio from a sound device (PortAudio via python-sounddevice) as `AudioBlock`s.

Threads:
  * PortAudio's callback thread runs `_EpochStream._on_audio`: it copies the block into the
    epoch's `FrameRing`, counts status flags and frames, stamps the time, and returns. It never
    blocks, logs or raises (an unexpected exception is stored and the stream aborted).
  * One consumer thread calls `SoundDeviceCapture.read` (and `reopen` / `wait_for_device`),
    which copy frames out of the ring, repair NaN/Inf and detect a lost device.

Device loss: PortAudio stops the stream (the device vanished, the callback aborted), or no
audio arrives within ``first_audio_timeout_s`` of opening or for ``stall_timeout_s`` after
that. `read` first hands out what was already captured, then raises `DeviceLostError`.
`reopen` re-initialises PortAudio, because it freezes its device list at initialisation
(python-sounddevice issues #47, #125, #382), and opens a new stream epoch whose frames restart
at 0. Re-initialising closes every stream in the process, so keep one capture per process.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sounddevice as sd
import structlog

from monitor.audio.blocks import AudioBlock, sanitize_nonfinite
from monitor.audio.config import AudioConfig
from monitor.audio.devices import (
    AudioDeviceError,
    InputDevice,
    refresh_portaudio,
    resolve_input_device,
)
from monitor.audio.epoch_clock import FrameZeroClock
from monitor.audio.ring_buffer import FrameRing, RingRead
from monitor.backoff import backoff_delay

log = structlog.get_logger(__name__)

LIVENESS_POLL_S = 0.1  # s: how often a waiting read looks for a lost or stalled device
# A reader waiting for a whole block takes what is there once no callback came for this long
# (two 50 ms callback periods): audio that stops mid-block is handed out at once, so the
# watchdog's audio age (monitor/ops/health.py) sees the stop as soon as with short blocks.
STALLED_AFTER_S = 0.1
FAILED_OPEN_LOG_EVERY = 10  # log the 1st, 11th, 21st... failed open of one outage


class DeviceOpenError(AudioDeviceError):
    """The input device exists but a stream on it cannot be opened or started."""


class DeviceLostError(AudioDeviceError):
    """The open stream stopped delivering audio (device gone, stream aborted, stalled)."""


@dataclass(frozen=True, slots=True)
class CaptureCounters:
    """Totals since the capture object was created, over every stream epoch."""

    frames_captured: int  # frames PortAudio delivered to the callback
    input_overflows: int  # callbacks flagged input_overflow (audio lost before PortAudio)
    input_underflows: int  # callbacks flagged input_underflow (PortAudio padded the input)
    dropped_frames: int  # frames dropped because the ring was full (consumer too slow)
    nonfinite_samples: int  # NaN/Inf samples replaced by 0 in blocks handed out
    last_block_monotonic: float | None  # time.monotonic() of the latest callback
    stream_epoch: int  # current epoch; 0 before the first open
    device_losses: int  # times read() raised DeviceLostError
    close_errors: int  # errors PortAudio raised while closing a stream (logged)


class _EpochStream:
    """One opened stream and everything its callback touches; replaced on each reopen."""

    def __init__(self, device: InputDevice, settings: AudioConfig, epoch: int) -> None:
        self.device = device
        self.epoch = epoch
        self.channels = settings.channels
        self.sample_rate = settings.samplerate or round(device.default_samplerate)
        self.ring = FrameRing.for_duration(settings.ring_s, self.sample_rate, self.channels)
        # Written by the callback thread only:
        self.frames_captured = 0
        self.input_overflows = 0
        self.input_underflows = 0
        self.last_callback_monotonic: float | None = None
        self.clock = FrameZeroClock(self.sample_rate)  # UTC of frame 0, from callback timing
        self.callback_error: BaseException | None = None
        self.finished = False  # set by PortAudio's finished callback
        self.lost_reason: str | None = None  # consumer-owned once set
        stream: sd.InputStream | None = None
        try:
            stream = sd.InputStream(
                device=device.index,
                samplerate=self.sample_rate,
                channels=self.channels,
                dtype="float32",
                blocksize=round(settings.callback_block_s * self.sample_rate),
                latency=settings.latency,
                callback=self._on_audio,
                finished_callback=self._on_finished,
            )
            stream.start()
            self.stream = stream
        except (sd.PortAudioError, ValueError) as exc:
            if stream is not None:  # opened but would not start: release the device
                stream.close(ignore_errors=True)
            raise DeviceOpenError(
                f"cannot open input device {device.index} {device.name!r} at "
                f"{self.sample_rate} Hz x {self.channels} ch: {exc}"
            ) from exc
        self.opened_monotonic = time.monotonic()

    def _on_audio(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's thread: copy and count only. Exceptions here would be printed and lost,
        # so keep the one we cannot avoid and stop the stream; read() reports it.
        try:
            if status:
                if status.input_overflow:
                    self.input_overflows += 1
                if status.input_underflow:
                    self.input_underflows += 1
            self.ring.write(indata)
            self.frames_captured += frames
            self.last_callback_monotonic = time.monotonic()
            # Frames offered, dropped ones included: the device's clock, not the ring's.
            self.clock.observe(time.time(), self.frames_captured)
        except Exception as exc:
            self.callback_error = exc
            raise sd.CallbackAbort from exc

    def _on_finished(self) -> None:
        self.finished = True

    def epoch_utc(self) -> float:
        """UTC of frame 0 (`FrameZeroClock`: refined over the epoch's first seconds)."""
        utc = self.clock.utc
        assert utc is not None  # only asked once a block was read, i.e. after a callback
        return utc

    def loss_reason(self, settings: AudioConfig) -> str | None:
        """Why this stream no longer delivers audio, or None while it is healthy."""
        if self.callback_error is not None:
            return f"audio callback failed: {self.callback_error!r}"
        if self.finished or not self.stream.active:
            return "PortAudio stopped the stream (device removed or stream aborted)"
        now = time.monotonic()
        if self.last_callback_monotonic is None:
            waited_s = now - self.opened_monotonic
            if waited_s > settings.first_audio_timeout_s:
                limit = settings.first_audio_timeout_s
                return f"no audio {waited_s:.1f} s after opening (first_audio_timeout_s={limit})"
            return None
        silent_s = now - self.last_callback_monotonic
        if silent_s > settings.stall_timeout_s:
            limit = settings.stall_timeout_s
            return f"audio stopped {silent_s:.1f} s ago (stall_timeout_s={limit})"
        return None

    def close(self) -> str | None:
        """Stop and close the stream; return PortAudio's complaint, if any."""
        try:
            self.stream.close(ignore_errors=False)
        except sd.PortAudioError as exc:
            return str(exc)
        return None


class SoundDeviceCapture:
    """Capture from one input device as `AudioBlock`s; a context manager owning the stream.

    Ownership: each block's samples are a fresh copy the caller owns. Overload: audio waits in
    a ring of ``ring_s`` seconds; when the caller falls that far behind, the newest audio is
    dropped and counted (see `FrameRing`), and the next block carries ``dropped_frames``.
    """

    def __init__(self, settings: AudioConfig) -> None:
        self.settings = settings
        self._stream: _EpochStream | None = None
        self._epoch = 0
        # Totals of closed epochs; the open epoch's live counts are added on demand.
        self._closed = dict.fromkeys(
            ("frames_captured", "input_overflows", "input_underflows", "dropped_frames"), 0
        )
        self._nonfinite_samples = 0
        self._device_losses = 0
        self._close_errors = 0
        self._last_block_monotonic: float | None = None

    def __enter__(self) -> SoundDeviceCapture:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def device(self) -> InputDevice:
        """The device of the open stream."""
        return self._require_stream().device

    @property
    def sample_rate(self) -> int:
        """Hz of the open stream (the device's rate unless configured)."""
        return self._require_stream().sample_rate

    @property
    def stream_epoch(self) -> int:
        """The current stream epoch: 1 after the first open, +1 per reopen."""
        return self._epoch

    def open(self) -> None:
        """Resolve the device and start a new stream epoch (frames restart at 0)."""
        if self._stream is not None:
            raise DeviceOpenError("capture is already open; close() or reopen() it")
        device = resolve_input_device(self.settings.device)
        if self.settings.channels > device.max_input_channels:
            raise DeviceOpenError(
                f"input device {device.index} {device.name!r} has "
                f"{device.max_input_channels} input channels, {self.settings.channels} requested"
            )
        self._stream = _EpochStream(device, self.settings, self._epoch + 1)
        self._epoch += 1
        log.info(
            "capture_opened",
            device=device.name,
            index=device.index,
            sample_rate=self._stream.sample_rate,
            channels=self.settings.channels,
            stream_epoch=self._epoch,
        )

    def close(self) -> None:
        """Stop the stream (if open), keeping its counts in the totals. Safe to repeat."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        complaint = stream.close()
        if complaint is not None:
            self._close_errors += 1
            log.warning("capture_close_failed", error=complaint, stream_epoch=stream.epoch)
        self._closed["frames_captured"] += stream.frames_captured
        self._closed["input_overflows"] += stream.input_overflows
        self._closed["input_underflows"] += stream.input_underflows
        self._closed["dropped_frames"] += stream.ring.dropped_frames_total
        self._last_block_monotonic = stream.last_callback_monotonic or self._last_block_monotonic

    def reopen(self) -> None:
        """Close, re-initialise PortAudio (so a re-plugged device is seen) and open again."""
        self.close()
        refresh_portaudio()
        self.open()

    def wait_for_device(
        self,
        max_wait_s: float = math.inf,
        *,
        initial_backoff_s: float | None = None,
        max_backoff_s: float | None = None,
        stop: threading.Event | None = None,
        on_failure: Callable[[AudioDeviceError], None] | None = None,
        rng: random.Random | None = None,
        initial: bool = False,
    ) -> bool:
        """Reopen until it works, waiting `monitor.backoff` (capped exponential, full jitter,
        from ``retry_min_s`` to ``retry_max_s`` unless given) between attempts; each failure
        is passed to `on_failure` and logged (the 1st, 11th, ... of one outage).

        ``initial``: the device was never opened, so the first attempt is a plain `open`:
        re-initialising PortAudio (`reopen`) silences the process's stderr meanwhile (see
        `refresh_portaudio`), and at start-up other threads are logging.

        Returns True once reopened, False if `stop` was set first. Raises DeviceLostError
        when the device has not come back within `max_wait_s` (math.inf: wait for ever).
        """
        low = self.settings.retry_min_s if initial_backoff_s is None else initial_backoff_s
        high = self.settings.retry_max_s if max_backoff_s is None else max_backoff_s
        rng = rng or random.Random()
        deadline = time.monotonic() + max_wait_s
        failures = 0
        while stop is None or not stop.is_set():
            try:
                if initial and failures == 0:
                    self.open()
                else:
                    self.reopen()
            except AudioDeviceError as exc:
                left = deadline - time.monotonic()
                if failures % FAILED_OPEN_LOG_EVERY == 0:
                    event = "capture_waiting_for_device" if initial else "capture_reopen_failed"
                    log.warning(event, attempt=failures + 1, error=str(exc))
                if on_failure is not None:
                    on_failure(exc)
                if left <= 0:
                    raise DeviceLostError(
                        f"input device {self.settings.device!r} did not come back within "
                        f"{max_wait_s} s ({failures + 1} attempts; last: {exc})"
                    ) from exc
                pause = min(backoff_delay(failures, low, max(low, high), rng), left)
                failures += 1
                if stop is None:
                    time.sleep(pause)
                elif stop.wait(pause):
                    return False
                continue
            if failures:
                log.info("capture_device_back", failed_attempts=failures)
            return True
        return False

    def read(
        self, timeout_s: float, max_frames: int | None = None, wait_for: int = 1
    ) -> AudioBlock | None:
        """The next block (at most `max_frames`), or None after `timeout_s` without audio.

        Waits until `wait_for` frames are there (a whole block: the reader is woken once per
        block), or until `timeout_s`, when whatever arrived is handed out. Consumer thread
        only. Audio already captured is handed out first; after that a lost or stalled device
        raises DeviceLostError (again on every call until `reopen`).
        """
        stream = self._require_stream()
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if stream.lost_reason is None:
                left = max(0.0, deadline - time.monotonic())
                got = stream.ring.read(min(LIVENESS_POLL_S, left), max_frames, wait_for)
                if got is None and (left <= LIVENESS_POLL_S or self._stalled(stream)):
                    got = stream.ring.read(0.0, max_frames)  # the deadline or a stall: take it
            else:  # already lost: drain without waiting
                got = stream.ring.read(0.0, max_frames)
            if got is not None:
                return self._to_block(stream, got)
            if stream.lost_reason is None:
                stream.lost_reason = stream.loss_reason(self.settings)
                if stream.lost_reason is not None:
                    self._device_losses += 1
                    log.warning(
                        "capture_device_lost", reason=stream.lost_reason, stream_epoch=stream.epoch
                    )
                    continue  # drain anything the callback stored just before it stopped
            if stream.lost_reason is not None:
                raise DeviceLostError(
                    f"input device {stream.device.name!r} (epoch {stream.epoch}): "
                    f"{stream.lost_reason}"
                )
            if time.monotonic() >= deadline:
                return None

    def _stalled(self, stream: _EpochStream) -> bool:
        last = stream.last_callback_monotonic
        period = max(STALLED_AFTER_S, 2 * self.settings.callback_block_s)
        return last is None or time.monotonic() - last > period

    def counters(self) -> CaptureCounters:
        """A snapshot of the totals (cheap; safe to call from the consumer thread)."""
        stream = self._stream
        live = (
            (0, 0, 0, 0, None)
            if stream is None
            else (
                stream.frames_captured,
                stream.input_overflows,
                stream.input_underflows,
                stream.ring.dropped_frames_total,
                stream.last_callback_monotonic,
            )
        )
        return CaptureCounters(
            frames_captured=self._closed["frames_captured"] + live[0],
            input_overflows=self._closed["input_overflows"] + live[1],
            input_underflows=self._closed["input_underflows"] + live[2],
            dropped_frames=self._closed["dropped_frames"] + live[3],
            nonfinite_samples=self._nonfinite_samples,
            last_block_monotonic=live[4] or self._last_block_monotonic,
            stream_epoch=self._epoch,
            device_losses=self._device_losses,
            close_errors=self._close_errors,
        )

    def _require_stream(self) -> _EpochStream:
        if self._stream is None:
            raise DeviceLostError("capture is not open; call open() or reopen()")
        return self._stream

    def _to_block(self, stream: _EpochStream, got: RingRead) -> AudioBlock:
        samples, nonfinite = sanitize_nonfinite(got.samples)
        self._nonfinite_samples += nonfinite
        return AudioBlock(
            samples=samples,
            start_frame=got.start_frame,
            sample_rate=stream.sample_rate,
            stream_epoch=stream.epoch,
            epoch_utc=stream.epoch_utc(),
            dropped_frames=got.dropped_frames,
            nonfinite_samples=nonfinite,
        )


__all__ = [
    "CaptureCounters",
    "DeviceLostError",
    "DeviceOpenError",
    "SoundDeviceCapture",
]
