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

import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import sounddevice as sd
import structlog
from pydantic import BaseModel, ConfigDict, Field

from monitor.audio.blocks import AudioBlock, sanitize_nonfinite
from monitor.audio.devices import (
    AudioDeviceError,
    InputDevice,
    refresh_portaudio,
    resolve_input_device,
)
from monitor.audio.epoch_clock import FrameZeroClock
from monitor.audio.ring_buffer import FrameRing, RingRead

log = structlog.get_logger(__name__)

DEFAULT_RING_S = 10.0  # s of audio buffered: rides out a multi-second consumer hiccup (GC,
# a slow inference batch) without dropping; costs 10 s * 48 kHz * 8 ch * 4 B = 15 MB at most
DEFAULT_STALL_TIMEOUT_S = 2.0  # s without a callback, once audio flowed, before the device
# counts as lost: 10-100x a normal callback period, short enough to reopen within a weld
DEFAULT_FIRST_AUDIO_TIMEOUT_S = 5.0  # s from opening to the first callback before the device
# counts as lost; PulseAudio's ALSA plugin takes 0.5-1.5 s to deliver its first block
DEFAULT_CALLBACK_BLOCK_S = 0.05  # s per PortAudio callback: 5x less CPU than PortAudio's
# ~3-9 ms choice (bench/capture_cpu.py); one gate frame (50 ms) per block, so the per-block
# cost of the pipeline is paid 20 times a second, and at most 50 ms waits in the device
MAX_CALLBACK_BLOCK_S = 1.0  # s: longer callbacks would delay stall detection and alerts
DEFAULT_RECONNECT_INITIAL_S = 0.5  # s before the first reopen attempt after a loss
DEFAULT_RECONNECT_MAX_S = 30.0  # s cap on the back-off between reopen attempts
RECONNECT_BACKOFF_FACTOR = 2.0  # each failed reopen doubles the wait, up to the cap
LIVENESS_POLL_S = 0.1  # s: how often a waiting read looks for a lost or stalled device
MAX_CHANNELS = 64  # sanity cap on configured channels (the largest interfaces we know of)
MIN_SAMPLE_RATE_HZ = 8_000  # below this the model's band cannot be represented
MAX_SAMPLE_RATE_HZ = 384_000  # highest rate PortAudio host APIs commonly offer


class DeviceOpenError(AudioDeviceError):
    """The input device exists but a stream on it cannot be opened or started."""


class DeviceLostError(AudioDeviceError):
    """The open stream stopped delivering audio (device gone, stream aborted, stalled)."""


class CaptureSettings(BaseModel):
    """What to capture from; validated before any device is touched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: int | str | None = None  # PortAudio index, name substring, or None for the default
    channels: int = Field(default=1, ge=1, le=MAX_CHANNELS)
    sample_rate_hz: int | None = Field(
        default=None, ge=MIN_SAMPLE_RATE_HZ, le=MAX_SAMPLE_RATE_HZ
    )  # None: the device's default rate
    ring_s: float = Field(default=DEFAULT_RING_S, gt=0, le=600, allow_inf_nan=False)
    stall_timeout_s: float = Field(default=DEFAULT_STALL_TIMEOUT_S, gt=0, allow_inf_nan=False)
    first_audio_timeout_s: float = Field(
        default=DEFAULT_FIRST_AUDIO_TIMEOUT_S, gt=0, allow_inf_nan=False
    )
    callback_block_s: float = Field(
        default=DEFAULT_CALLBACK_BLOCK_S, ge=0, le=MAX_CALLBACK_BLOCK_S, allow_inf_nan=False
    )  # s of audio per callback; 0: PortAudio picks (often a few ms: ~5x the CPU)
    latency: Literal["low", "high"] = "high"  # high: larger device buffers, fewer overflows


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

    def __init__(self, device: InputDevice, settings: CaptureSettings, epoch: int) -> None:
        self.device = device
        self.epoch = epoch
        self.channels = settings.channels
        self.sample_rate = settings.sample_rate_hz or round(device.default_samplerate)
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

    def loss_reason(self, settings: CaptureSettings) -> str | None:
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

    def __init__(self, settings: CaptureSettings) -> None:
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
        max_wait_s: float,
        *,
        initial_backoff_s: float = DEFAULT_RECONNECT_INITIAL_S,
        max_backoff_s: float = DEFAULT_RECONNECT_MAX_S,
        stop: threading.Event | None = None,
    ) -> bool:
        """Reopen until it works, waiting a capped, doubling back-off between attempts.

        Returns True once reopened, False if `stop` was set first. Raises DeviceLostError
        when the device has not come back within `max_wait_s` (use math.inf to wait forever).
        """
        deadline = time.monotonic() + max_wait_s
        backoff = initial_backoff_s
        attempt = 0
        while True:
            attempt += 1
            try:
                self.reopen()
                return True
            except AudioDeviceError as exc:
                left = deadline - time.monotonic()
                log.warning("capture_reopen_failed", attempt=attempt, error=str(exc))
                if left <= 0:
                    raise DeviceLostError(
                        f"input device {self.settings.device!r} did not come back within "
                        f"{max_wait_s} s ({attempt} attempts; last: {exc})"
                    ) from exc
            pause = min(backoff, left)
            if stop is not None and stop.wait(pause):
                return False
            if stop is None:
                time.sleep(pause)
            backoff = min(backoff * RECONNECT_BACKOFF_FACTOR, max_backoff_s)

    def read(self, timeout_s: float, max_frames: int | None = None) -> AudioBlock | None:
        """The next block (at most `max_frames`), or None after `timeout_s` without audio.

        Consumer thread only. Audio already captured is handed out first; after that a lost
        or stalled device raises DeviceLostError (again on every call until `reopen`).
        """
        stream = self._require_stream()
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if stream.lost_reason is None:
                wait = min(LIVENESS_POLL_S, max(0.0, deadline - time.monotonic()))
                got = stream.ring.read(wait, max_frames)
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
    "CaptureSettings",
    "DeviceLostError",
    "DeviceOpenError",
    "SoundDeviceCapture",
]
