"""The seam every audio source produces: a block of frames stamped with its place on the
stream's sample clock.

A source (sound device, files for replay) hands the monitor `AudioBlock`s. Time comes from the
sample counter: ``start_frame`` counts frames since the stream (epoch) was opened, and
``epoch_utc`` maps frame 0 of that epoch to wall-clock time once, so block times never drift
with the consumer's scheduling. Lost and repaired audio is reported on the block itself so the
consumer can count it and mark what it judges as degraded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """Audio frames from one source, in order, with their place on the stream's sample clock.

    Ownership: ``samples`` belongs to the receiver (the source already copied it out of any
    buffer it reuses), so it may be kept or modified without copying.
    """

    samples: np.ndarray  # float32 [frames, channels]; the receiver owns it (already a copy)
    start_frame: int  # index of the block's first frame on this stream's sample clock
    sample_rate: int  # Hz, the source's rate (device rate; resampling happens later)
    stream_epoch: int  # increments each time a stream is (re)opened; frames restart at 0
    epoch_utc: float  # UTC POSIX seconds of frame 0 of this epoch (taken once per open)
    dropped_frames: int = 0  # frames lost immediately before this block (overflow, ring full)
    nonfinite_samples: int = 0  # NaN/Inf samples found and replaced by 0 in this block

    @property
    def frames(self) -> int:
        """Number of frames (samples per channel) in the block."""
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        """Number of channels in the block."""
        return int(self.samples.shape[1])

    @property
    def end_frame(self) -> int:
        """Index one past the block's last frame (the next block starts here if none is lost)."""
        return self.start_frame + self.frames

    def utc_of_frame(self, frame: int) -> float:
        """UTC POSIX seconds of `frame` (an index on this epoch's sample clock)."""
        return utc_of_frame(self, frame)


def utc_of_frame(block: AudioBlock, frame: int) -> float:
    """UTC POSIX seconds of `frame` on `block`'s epoch: epoch start plus frames / rate."""
    return block.epoch_utc + frame / block.sample_rate


def sanitize_nonfinite(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN and +-Inf samples by 0; return (clean samples, how many were replaced).

    Pure: the input is never modified. When every sample is finite (the normal case) the input
    itself is returned, so the check costs one pass and no copy.
    """
    finite = np.isfinite(samples)
    nonfinite = int(finite.size - np.count_nonzero(finite))
    if nonfinite == 0:
        return samples, 0
    # 0 (silence) rather than clipping to +-1: a corrupt sample carries no information, and
    # silence cannot fake an arc or a defect burst downstream.
    return np.where(finite, samples, np.float32(0.0)).astype(samples.dtype, copy=False), nonfinite
