"""Streaming resampling of the stations from the device rate to the model's rate.

One `StationResampler` per pipeline keeps a multichannel `soxr.ResampleStream` (one channel
per station) across blocks, so block boundaries leave no trace (the output equals
whole-buffer `soxr.resample`, sample for sample, once the stream is flushed). The output
carries its own sample index on the model-rate clock of the current stream epoch: output
sample 0 is input frame 0 (soxr removes its filter delay by holding back output, it never
shifts it). A new epoch (device reopened, next file) restarts the stream and the clock.
Frames lost inside an epoch are filled with silence so the clock stays exact; the caller
counts them and marks the welds they touch as degraded.

All stations share one stream: soxr filters each channel on its own, so a channel's output is
the same, bit for bit, as a mono stream's (checked in tests/test_monitor_stream_parts.py), and
one call per block instead of one per station saves soxr's per-call overhead
(docs/benchmarks.md, "Per-block costs behind code choices").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from deploy.audio import RESAMPLE_QUALITY
from deploy.errors import WeldmonError


class ResampleError(WeldmonError):
    """Blocks arrived out of order on one epoch's clock."""


@dataclass(frozen=True, slots=True)
class StationChunk:
    """Mono samples at the model rate, placed on the station's clock."""

    samples: np.ndarray  # float32 [n] or [n, channels]; owned by the receiver
    start_index: int  # index of samples[0] on this epoch's model-rate clock
    epoch: int

    @property
    def end_index(self) -> int:
        """One past the last sample."""
        return self.start_index + int(self.samples.shape[0])


class StationResampler:
    """Device-rate blocks in, model-rate `StationChunk`s out, state kept across blocks.

    `channels` 1 takes mono [frames] blocks and gives mono chunks; more take
    [frames, channels] blocks and give [n, channels] chunks."""

    def __init__(self, in_rate: int, out_rate: int, channels: int = 1) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ResampleError(f"rates must be positive, got {in_rate} -> {out_rate}")
        if channels <= 0:
            raise ResampleError(f"channels must be positive, got {channels}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self._empty = np.zeros((0,) if channels == 1 else (0, channels), dtype=np.float32)
        self._stream: soxr.ResampleStream | None = None
        self._epoch: int | None = None
        self._next_in = 0  # the input frame the next block should start at
        self._next_out = 0  # the output index of the next sample produced
        self.filled_frames = 0  # input frames of silence inserted for lost audio (total)

    @property
    def passthrough(self) -> bool:
        """True when no resampling is needed (device rate = model rate)."""
        return self.in_rate == self.out_rate

    def process(self, samples: np.ndarray, start_frame: int, epoch: int) -> StationChunk:
        """Resample the next block; `start_frame` is on the device clock of `epoch`."""
        x = np.asarray(samples, dtype=np.float32)
        if x.shape[1:] != self._empty.shape[1:]:
            raise ResampleError(f"block shape {x.shape} does not fit {self.channels} channel(s)")
        if epoch != self._epoch:
            self._start_epoch(start_frame, epoch)
        if start_frame < self._next_in:
            raise ResampleError(
                f"block at frame {start_frame} overlaps the previous one (ends {self._next_in})"
            )
        gap = start_frame - self._next_in
        if gap:
            # Silence keeps the clock exact and the windows contiguous; the loss is counted
            # upstream (AudioBlock.dropped_frames) and flags the weld as degraded.
            self.filled_frames += gap
            x = np.concatenate((np.zeros((gap, *x.shape[1:]), dtype=np.float32), x))
        self._next_in = start_frame + int(samples.shape[0])
        return self._emit(self._resample(x, last=False), epoch)

    def flush(self) -> StationChunk:
        """End of the epoch's stream: the samples soxr still holds (empty in passthrough)."""
        if self._epoch is None or self._stream is None:
            return StationChunk(self._empty.copy(), self._next_out, self._epoch or 0)
        out = self._resample(self._empty, last=True)
        chunk = self._emit(out, self._epoch)
        self._stream = None
        return chunk

    def _start_epoch(self, start_frame: int, epoch: int) -> None:
        self._epoch = epoch
        self._next_in = start_frame
        self._next_out = round(start_frame * self.out_rate / self.in_rate)
        self._stream = (
            None
            if self.passthrough
            else soxr.ResampleStream(
                self.in_rate,
                self.out_rate,
                self.channels,
                dtype="float32",
                quality=RESAMPLE_QUALITY,
            )
        )

    def _resample(self, x: np.ndarray, last: bool) -> np.ndarray:
        if self._stream is None:
            return x if not last else self._empty.copy()
        out: np.ndarray = self._stream.resample_chunk(x, last=last)
        return out

    def _emit(self, out: np.ndarray, epoch: int) -> StationChunk:
        chunk = StationChunk(np.ascontiguousarray(out, dtype=np.float32), self._next_out, epoch)
        self._next_out += int(out.shape[0])
        return chunk
