"""Cutting a weld into model windows as its audio arrives.

A weld's windows are `chunk_samples` long, back to back, aligned at the weld's start sample;
a partial tail is never judged. That is `deploy.windows.cut_windows` applied to the weld's
audio [start, end), so a weld that is a whole file (file mode) gets exactly the windows the
artifact's own `forward` cuts from that file.

The segmenter may place a start in the past (pre-roll, minimum weld length), so each station
keeps a `SampleHistory` of its recent samples and windows are always read from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deploy.errors import WeldmonError
from deploy.windows import window_count


class HistoryError(WeldmonError):
    """Samples asked for are no longer (or not yet) in the history."""


class SampleHistory:
    """The latest `capacity` samples of one station, addressed by their index on its clock.

    Ownership: `append` copies into its own buffer; `read` returns a new array.
    Samples older than `capacity` are overwritten; reading them raises HistoryError.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise HistoryError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._end = 0  # index one past the newest sample
        self._start = 0  # index of the oldest sample still held

    @property
    def start_index(self) -> int:
        """Oldest index still held."""
        return self._start

    @property
    def end_index(self) -> int:
        """One past the newest index."""
        return self._end

    def reset(self, index: int) -> None:
        """Forget everything; the next append must start at `index` (a new stream epoch)."""
        self._start = self._end = index

    def append(self, samples: np.ndarray, start_index: int) -> None:
        """Add the samples that start at `start_index` (must continue the history)."""
        if start_index != self._end:
            raise HistoryError(
                f"samples start at {start_index}, the history ends at {self._end}: not contiguous"
            )
        x = np.asarray(samples, dtype=np.float32)
        if x.size > self.capacity:
            x = x[-self.capacity :]
        n = x.size
        pos = (start_index + int(samples.size) - n) % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = x[:first]
        self._buf[: n - first] = x[first:]
        self._end = start_index + int(samples.size)
        self._start = max(self._start, self._end - self.capacity)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as a new float32 array."""
        if start < self._start or stop > self._end or stop < start:
            raise HistoryError(
                f"samples [{start}, {stop}) not held (history holds [{self._start}, {self._end}))"
            )
        n = stop - start
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        out = np.empty(n, dtype=np.float32)
        out[:first] = self._buf[pos : pos + first]
        out[first:] = self._buf[: n - first]
        return out


@dataclass(frozen=True, slots=True)
class Window:
    """One model window of one weld."""

    index: int  # 0, 1, ... within the weld
    start: int  # first sample on the station's clock
    samples: np.ndarray  # float32 [chunk_samples], owned by the receiver

    @property
    def end(self) -> int:
        """One past the last sample."""
        return self.start + int(self.samples.size)


class WeldWindower:
    """Cuts one weld's windows from its station's history, aligned at the weld start."""

    def __init__(self, start_index: int, chunk_samples: int) -> None:
        if chunk_samples < 1:
            raise HistoryError(f"chunk_samples must be >= 1, got {chunk_samples}")
        self.start_index = start_index
        self.chunk_samples = chunk_samples
        self.emitted = 0  # windows cut so far

    def windows_until(self, history: SampleHistory, stop: int) -> list[Window]:
        """Every not-yet-cut window that ends at or before `stop` (and is in the history)."""
        stop = min(stop, history.end_index)
        total = window_count(max(0, stop - self.start_index), self.chunk_samples)
        out = []
        while self.emitted < total:
            start = self.start_index + self.emitted * self.chunk_samples
            samples = history.read(start, start + self.chunk_samples)
            out.append(Window(self.emitted, start, samples))
            self.emitted += 1
        return out

    def whole_windows(self, end_index: int) -> int:
        """How many whole windows the weld [start, end_index) holds."""
        return window_count(max(0, end_index - self.start_index), self.chunk_samples)
