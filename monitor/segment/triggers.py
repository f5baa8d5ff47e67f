"""Segmenters that do not listen to the audio: external triggers and one weld per file.

Both implement `deploy.segment.protocol.Segmenter`, like the arc gate, so the pipeline treats
all three modes alike.

Trigger mode: the robot reports arc-on/arc-off on ``{prefix}/{station}/trigger``. The pipeline
maps each message's arrival time to the station's sample clock and `push`es it; the boundary is
emitted once the audio has reached that sample (messages usually arrive before the audio that
belongs to them has been read from the device).
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import numpy as np

from deploy.segment.protocol import Boundary, SegmentationError

# How far back a trigger may place a start (s): covers MQTT and capture latency; a start older
# than this is clamped to the oldest sample still held.
TRIGGER_LOOKBACK_S = 2.0
DEFAULT_TRIGGER_MAX_WELD_S = 600.0  # a lost "stop" message cannot hold a weld open forever
MAX_PENDING_TRIGGERS = 64  # a flood of triggers is not a weld; the excess is counted, dropped


class FileSegmenter:
    """One weld per stream: it starts at the first sample and ends where the stream ends."""

    def __init__(self) -> None:
        self._start: int | None = None
        self._closed = False

    @property
    def in_weld(self) -> bool:
        """True once the first sample arrived, until close."""
        return self._start is not None and not self._closed

    @property
    def lookback_samples(self) -> int:
        """A file weld starts at the first sample: nothing to look back at."""
        return 0

    def process(self, samples: np.ndarray, start_index: int) -> list[Boundary]:
        """The first block opens the weld."""
        if self._closed:
            raise SegmentationError("process() after close()")
        if self._start is None:
            self._start = start_index
            return [Boundary("start", start_index)]
        return []

    def close(self, end_index: int) -> list[Boundary]:
        """The stream ended: the weld ends with it."""
        if self._closed or self._start is None:
            self._closed = True
            return []
        self._closed = True
        return [Boundary("end", end_index)]


class TriggerSegmenter:
    """Welds delimited by pushed start/stop triggers (sample indices on the station's clock)."""

    def __init__(self, sample_rate: int, max_weld_s: float) -> None:
        self.sample_rate = sample_rate
        self._lookback = round(TRIGGER_LOOKBACK_S * sample_rate)
        self._max_weld = round(max_weld_s * sample_rate)
        self._pending: deque[tuple[Literal["start", "stop"], int]] = deque()
        self._start: int | None = None
        self._stream_start: int | None = None
        self._end = 0  # one past the newest sample seen
        self._last_boundary = 0
        self._closed = False
        self.ignored_triggers = 0  # start while in a weld, stop while idle, or overflow
        self.forced_ends = 0  # welds cut at max_weld_s

    @property
    def in_weld(self) -> bool:
        """True between a start and its end."""
        return self._start is not None

    @property
    def lookback_samples(self) -> int:
        """How far before the newest sample a start may lie."""
        return self._lookback

    def push(self, state: Literal["start", "stop"], index: int) -> None:
        """A trigger that belongs at sample `index`; applied when the audio gets there."""
        if len(self._pending) >= MAX_PENDING_TRIGGERS:
            self.ignored_triggers += 1
            return
        self._pending.append((state, index))

    def process(self, samples: np.ndarray, start_index: int) -> list[Boundary]:
        """Advance the clock to the end of this block and apply the triggers it reaches."""
        if self._closed:
            raise SegmentationError("process() after close()")
        if self._stream_start is None:
            self._stream_start = self._last_boundary = start_index
        if start_index < self._end:
            raise SegmentationError(f"block at {start_index} is before the stream end {self._end}")
        self._end = start_index + int(np.asarray(samples).size)
        out: list[Boundary] = []
        while self._pending and self._pending[0][1] <= self._end:
            state, index = self._pending.popleft()
            self._apply(state, index, out)
        if self._start is not None and self._end - self._start >= self._max_weld:
            self.forced_ends += 1
            self._finish(self._start + self._max_weld, out)
        return out

    def close(self, end_index: int) -> list[Boundary]:
        """The stream ended: an open weld ends at `end_index`."""
        if self._closed:
            return []
        self._closed = True
        out: list[Boundary] = []
        if self._start is not None:
            self._finish(end_index, out)
        self.ignored_triggers += len(self._pending)
        self._pending.clear()
        return out

    def _apply(self, state: str, index: int, out: list[Boundary]) -> None:
        oldest = max(self._last_boundary, self._end - self._lookback)
        index = min(max(index, oldest), self._end)
        if state == "start":
            if self._start is not None:
                self.ignored_triggers += 1
                return
            self._start = self._last_boundary = index
            out.append(Boundary("start", index))
        elif self._start is None:
            self.ignored_triggers += 1
        else:
            self._finish(index, out)

    def _finish(self, index: int, out: list[Boundary]) -> None:
        assert self._start is not None
        index = max(index, self._start)
        out.append(Boundary("end", index))
        self._start = None
        self._last_boundary = index
