"""Segmenters that do not listen to the audio: external triggers and one weld per file.

Both implement `deploy.segment.protocol.Segmenter`, like the arc gate, so the pipeline treats
all three modes alike.

Trigger mode: the robot reports arc-on/arc-off on ``{prefix}/{station}/trigger``. The pipeline
maps each message's arrival time to the station's sample clock and `push`es it; the boundary is
emitted once the audio has reached that sample (messages usually arrive before the audio that
belongs to them has been read from the device).
"""

from __future__ import annotations

from collections import Counter, deque
from enum import StrEnum
from typing import Literal

import numpy as np

from deploy.segment.protocol import NO_FRAMES, Boundary, Frames, SegmentationError, Segmenter

# How far back a trigger may place a start (s): covers MQTT and capture latency; a start older
# than this is clamped to the oldest sample still held.
TRIGGER_LOOKBACK_S = 2.0
DEFAULT_TRIGGER_MAX_WELD_S = 600.0  # a lost "stop" message cannot hold a weld open forever
MAX_PENDING_TRIGGERS = 64  # a flood of triggers is not a weld; the excess is counted, dropped


class TriggerIgnored(StrEnum):
    """Why a trigger made no boundary (the ``reason`` of ``weldmon_triggers_ignored_total``)."""

    QUEUE_FULL = "queue_full"  # MAX_PENDING_TRIGGERS were already waiting for the audio
    START_IN_WELD = "start_in_weld"  # a start while a weld was open
    STOP_WHILE_IDLE = "stop_while_idle"  # a stop with no weld open
    STREAM_END = "stream_end"  # still waiting for its audio when the stream ended
    UNKNOWN_STATION = "unknown_station"  # no trigger-mode station of that name (pipeline)
    NO_AUDIO = "no_audio"  # before the first audio block: no station clock yet (daemon)


class FileSegmenter(Segmenter):
    """One weld per stream: it starts at the first sample and ends where the stream ends."""

    def __init__(self) -> None:
        self._start: int | None = None
        self._end = 0  # one past the newest sample seen
        self._start_due = False  # the first block arrived; its start boundary is not out yet
        self._closed = False

    @property
    def in_weld(self) -> bool:
        """True once the first sample arrived, until close."""
        return self._start is not None and not self._closed

    @property
    def lookback_samples(self) -> int:
        """A file weld starts at the first sample: nothing to look back at."""
        return 0

    @property
    def arc_confirmed_until(self) -> int:
        """The weld ends with the stream: every sample seen so far is inside it."""
        return self._end if self.in_weld else 0

    def take(self, samples: np.ndarray, start_index: int) -> Frames:
        """The first block opens the weld; nothing is measured."""
        if self._closed:
            raise SegmentationError("process() after close()")
        if self._start is None:
            self._start = start_index
            self._start_due = True
        self._end = start_index + int(np.asarray(samples).size)
        return NO_FRAMES

    def decide(self, measured: np.ndarray) -> list[Boundary]:
        """The start boundary, after the first block."""
        if not self._start_due:
            return []
        self._start_due = False
        assert self._start is not None
        return [Boundary("start", self._start)]

    def close(self, end_index: int) -> list[Boundary]:
        """The stream ended: the weld ends with it."""
        if self._closed or self._start is None:
            self._closed = True
            return []
        self._closed = True
        return [Boundary("end", end_index)]


class TriggerSegmenter(Segmenter):
    """Welds delimited by pushed start/stop triggers (sample indices on the station's clock)."""

    def __init__(self, sample_rate: int, max_weld_s: float) -> None:
        self.sample_rate = sample_rate
        self._lookback = round(TRIGGER_LOOKBACK_S * sample_rate)
        self._max_weld = round(max_weld_s * sample_rate)
        self._pending: deque[tuple[Literal["start", "stop"], int, dict[str, str]]] = deque()
        # the part context of each start boundary handed out and not yet taken, in order
        self._start_contexts: deque[dict[str, str]] = deque()
        self._start: int | None = None
        self._stream_start: int | None = None
        self._end = 0  # one past the newest sample seen
        self._last_boundary = 0
        self._closed = False
        self.ignored: Counter[TriggerIgnored] = Counter()  # by reason, since construction
        self._unreported: Counter[TriggerIgnored] = Counter()  # not yet taken (take_ignored)
        self.forced_ends = 0  # welds cut at max_weld_s

    @property
    def in_weld(self) -> bool:
        """True between a start and its end."""
        return self._start is not None

    @property
    def ignored_triggers(self) -> int:
        """Triggers ignored so far, whatever the reason."""
        return self.ignored.total()

    def take_ignored(self) -> Counter[TriggerIgnored]:
        """The triggers ignored since the last call, by reason (the pipeline counts and logs
        them)."""
        taken, self._unreported = self._unreported, Counter()
        return taken

    def _ignore(self, reason: TriggerIgnored, count: int = 1) -> None:
        self.ignored[reason] += count
        self._unreported[reason] += count

    @property
    def lookback_samples(self) -> int:
        """How far before the newest sample a start may lie."""
        return self._lookback

    @property
    def arc_confirmed_until(self) -> int:
        """A stop trigger is placed at most the look-back before the newest sample (and not
        before the start), so the weld runs at least to there."""
        if self._start is None:
            return 0
        return max(self._start, self._end - self._lookback)

    def push(
        self, state: Literal["start", "stop"], index: int, context: dict[str, str] | None = None
    ) -> bool:
        """A trigger that belongs at sample `index`; applied when the audio gets there. A
        start's `context` (the part it names) goes with the start boundary it makes. False
        (and counted) when MAX_PENDING_TRIGGERS already wait."""
        if len(self._pending) >= MAX_PENDING_TRIGGERS:
            self._ignore(TriggerIgnored.QUEUE_FULL)
            return False
        self._pending.append((state, index, dict(context or {})))
        return True

    def take_start_context(self) -> dict[str, str]:
        """The context of the oldest start boundary not yet asked about (the pipeline asks
        once per start boundary, in order); {} when its trigger carried none."""
        return self._start_contexts.popleft() if self._start_contexts else {}

    def take(self, samples: np.ndarray, start_index: int) -> Frames:
        """Advance the clock to the end of this block; nothing is measured."""
        if self._closed:
            raise SegmentationError("process() after close()")
        if self._stream_start is None:
            self._stream_start = self._last_boundary = start_index
        if start_index < self._end:
            raise SegmentationError(f"block at {start_index} is before the stream end {self._end}")
        self._end = start_index + int(np.asarray(samples).size)
        return NO_FRAMES

    def decide(self, measured: np.ndarray) -> list[Boundary]:
        """Apply the triggers the clock has reached; cut a weld at max_weld_s."""
        out: list[Boundary] = []
        while self._pending and self._pending[0][1] <= self._end:
            state, index, context = self._pending.popleft()
            self._apply(state, index, out, context)
        if self._start is not None and self._end - self._start >= self._max_weld:
            self.forced_ends += 1
            self._finish(self._start + self._max_weld, out, forced=True)
        return out

    def close(self, end_index: int) -> list[Boundary]:
        """The stream ended: an open weld ends at `end_index`."""
        if self._closed:
            return []
        self._closed = True
        out: list[Boundary] = []
        if self._start is not None:
            self._finish(end_index, out)
        if self._pending:
            self._ignore(TriggerIgnored.STREAM_END, len(self._pending))
        self._pending.clear()
        return out

    def _apply(self, state: str, index: int, out: list[Boundary], context: dict[str, str]) -> None:
        oldest = max(self._last_boundary, self._end - self._lookback)
        index = min(max(index, oldest), self._end)
        if state == "start":
            if self._start is not None:
                self._ignore(TriggerIgnored.START_IN_WELD)
                return
            self._start = self._last_boundary = index
            self._start_contexts.append(context)
            out.append(Boundary("start", index))
        elif self._start is None:
            self._ignore(TriggerIgnored.STOP_WHILE_IDLE)
        else:
            self._finish(index, out)

    def _finish(self, index: int, out: list[Boundary], forced: bool = False) -> None:
        assert self._start is not None
        index = max(index, self._start)
        out.append(Boundary("end", index, forced))
        self._start = None
        self._last_boundary = index
