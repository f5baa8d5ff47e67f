"""Blocks in, whole frames out: the framing the audio segmenters (gate, crackle) share.

A segmenter measures fixed-length frames, but blocks arrive in any size. `FrameGrid` checks
each block (mono, finite, consecutive), keeps the partial frame between blocks, and knows
where every whole frame starts, so boundaries do not depend on how the stream was blocked.
A gap (samples lost upstream) drops the partial frame, restarts the grid at the new block
and is counted in `gap_samples`; a block that starts before the previous one ended raises.
"""

from __future__ import annotations

import math

import numpy as np

from deploy.segment.protocol import SegmentationError


class FrameGrid:
    """The frame grid of one stream; `take` each block, in order."""

    def __init__(self, frame_len: int) -> None:
        self.frame_len = frame_len
        self.stream_start = 0  # the first block's start index
        self.frame_starts: list[int] = []  # starts of frames taken but not yet decided
        self.gap_samples = 0  # samples missing between blocks
        self.closed = False  # set by the segmenter's close(): no block after it
        self._next_index: int | None = None  # the sample index the next block must start at
        self._partial = np.zeros(0, dtype=np.float32)
        self._partial_start = 0

    def take(self, samples: np.ndarray, start_index: int) -> np.ndarray:
        """Buffer the block; return the whole frames it completes, one after another (their
        starts appended to `frame_starts`)."""
        if self.closed:
            raise SegmentationError("process() after close()")
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise SegmentationError(f"samples must be mono (1-D), got shape {x.shape}")
        # A float64 sum of float32 samples cannot overflow, so it is finite exactly when every
        # sample is: one pass instead of isfinite() and all().
        if not math.isfinite(x.sum(dtype=np.float64)):
            raise SegmentationError(f"block at sample {start_index} holds NaN or Inf")
        self._place(start_index)
        self._next_index = start_index + x.size
        buffered = np.concatenate((self._partial, x))
        n_whole = buffered.size // self.frame_len * self.frame_len
        first = self._partial_start
        self._partial = buffered[n_whole:].copy()
        self._partial_start = first + n_whole
        self.frame_starts.extend(range(first, first + n_whole, self.frame_len))
        return buffered[:n_whole]

    def _place(self, start_index: int) -> None:
        if self._next_index is None:
            self.stream_start = self._partial_start = start_index
            return
        if start_index < self._next_index:
            raise SegmentationError(
                f"block starts at sample {start_index}, before the previous block's end "
                f"({self._next_index}): blocks must be consecutive"
            )
        if start_index > self._next_index:
            # Samples were lost upstream: drop the partial frame and restart the frame grid.
            self.gap_samples += start_index - self._next_index
            self._partial = np.zeros(0, dtype=np.float32)
            self._partial_start = start_index
