"""Current segmenter: weld start and end from the welder's own arc current.

Where the power source reports its process data, the current says exactly when the arc
burns: a weld runs from the first sample above ``threshold_a`` to the last one, current dips
under ``bridge_s`` are dropouts inside it, runs shorter than ``min_weld_s`` (a touch of the
wire) are discarded. The samples are pushed as they arrive (``push``, already on the
station's clock); the audio only moves the clock on (``process``), so a boundary is reported
once the audio has reached it *and* the samples say how it goes on: a start once
``min_weld_s`` of arc followed it, an end once ``bridge_s`` without arc did. Samples may
arrive before or after the audio they belong to (MQTT and capture latencies differ); a start
that lies more than ``lookback_s`` behind the audio is placed at the oldest sample the caller
still holds (counted in ``late_starts``). When the samples stop coming during a weld for
``stale_s`` of audio (no sample came in meanwhile), the weld ends at its last arc sample
(``stale_ends``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from deploy.segment.process import (
    ARC_BRIDGE_S,
    ARC_CURRENT_A,
    ProcessSample,
    current_dropouts,
    dropout_threshold,
)
from deploy.segment.protocol import (
    NO_FRAMES,
    Boundary,
    Dropout,
    Frames,
    SegmentationError,
    Segmenter,
)
from deploy.strict_model import StrictModel


class CurrentParams(StrictModel):
    """Current-segmenter settings."""

    threshold_a: float = Field(
        ARC_CURRENT_A,
        gt=0.0,
        description="Current above which the arc burns (A); the wire feeder's creep current "
        "before ignition is 2-4 A, a burning MAG arc 100-300 A.",
    )
    bridge_s: float = Field(
        ARC_BRIDGE_S,
        ge=0.0,
        description="Current dips shorter than this (s) are dropouts inside one weld.",
    )
    min_weld_s: float = Field(
        0.3, ge=0.0, description="Shorter arcs (s) are discarded (a touch, a test strike)."
    )
    lookback_s: float = Field(
        3.0,
        gt=0.0,
        description="How far behind the audio a start may still be placed (s): the process "
        "data's latency plus min_weld_s.",
    )
    stale_s: float = Field(
        3.0,
        gt=0.0,
        description="An open weld whose samples stopped coming this long ago (s of audio) "
        "ends at its last arc sample.",
    )
    max_weld_s: float = Field(
        600.0, gt=0.0, description="Longest weld (s) before an end is forced."
    )


@dataclass
class _Arc:
    first: int  # index of its first sample above the threshold
    last: int  # index of its latest sample above the threshold
    started: bool = False  # its start boundary was queued
    forced: bool = False  # cut at max_weld_s: the rest of it is no weld
    samples: list[ProcessSample] = field(default_factory=list)  # from first on


class CurrentSegmenter(Segmenter):
    """Welds from pushed process samples; the audio moves the clock (see the module doc)."""

    def __init__(self, params: CurrentParams, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise SegmentationError(f"sample_rate must be positive, got {sample_rate}")
        self.params = params
        self.sample_rate = sample_rate
        self._bridge = round(params.bridge_s * sample_rate)
        self._min_weld = round(params.min_weld_s * sample_rate)
        self._lookback = round(params.lookback_s * sample_rate)
        self._stale = round(params.stale_s * sample_rate)
        self._max_weld = round(params.max_weld_s * sample_rate)
        # An arc's samples are kept for its dropouts: at most max_weld_s at 100 samples/s.
        self._max_samples = round(params.max_weld_s * 100)
        self._arc: _Arc | None = None
        self._known = -1  # index of the latest sample pushed
        self._end: int | None = None  # one past the newest audio sample seen
        self._heard_at: int | None = None  # self._end when the latest sample came in
        self._block_start = 0  # first sample of the latest block
        self._queue: deque[Boundary] = deque()  # decided, waiting for the audio to reach them
        self._open = False  # a start was reported, its end not yet
        self._last_boundary = 0
        self._closed = False
        self.discarded_arcs = 0  # arcs shorter than min_weld_s
        self.late_starts = 0  # starts further back than lookback_s, moved up to it
        self.stale_ends = 0  # welds ended because the samples stopped coming
        self.forced_ends = 0  # welds cut at max_weld_s
        self.samples_out_of_order = 0  # pushed samples not after the previous one, skipped

    @property
    def in_weld(self) -> bool:
        """True between a reported start and its end."""
        return self._open

    @property
    def lookback_samples(self) -> int:
        """How far behind the newest audio a start may be placed."""
        return self._lookback

    @property
    def arc_confirmed_until(self) -> int:
        """The weld's latest arc sample the audio has reached (capped at a forced cut): its
        end is placed at the arc's last sample, which only moves on; a queued end is known."""
        if not self._open:
            return 0
        ends = [b.index for b in self._queue if b.kind == "end"]
        if ends:
            return max(ends[0], self._last_boundary)
        arc = self._arc
        if arc is None:
            return self._last_boundary
        last = min(arc.last, arc.first + self._max_weld, self._end or 0)
        return max(last, self._last_boundary)

    def push(self, sample: ProcessSample) -> None:
        """One process sample (in time order; an older one is counted and skipped)."""
        if self._closed:
            return
        if sample.index <= self._known:
            self.samples_out_of_order += 1
            return
        self._known = sample.index
        self._heard_at = self._end
        arc = self._arc
        if sample.current_a > self.params.threshold_a:
            if arc is not None and sample.index - arc.last > self._bridge:
                self._finish(arc)
                arc = None
            if arc is None:
                arc = self._arc = _Arc(sample.index, sample.index)
            arc.last = sample.index
        if arc is not None and not arc.forced and len(arc.samples) < self._max_samples:
            arc.samples.append(sample)
        self._decide()

    def take(self, samples: np.ndarray, start_index: int) -> Frames:
        """Advance the clock to the end of this block; nothing is measured."""
        if self._closed:
            raise SegmentationError("process() after close()")
        if self._end is not None and start_index < self._end:
            raise SegmentationError(f"block at {start_index} is before the stream end {self._end}")
        if self._end is None:
            self._last_boundary = start_index
        self._block_start = start_index
        self._end = start_index + int(np.asarray(samples).size)
        return NO_FRAMES

    def decide(self, measured: np.ndarray) -> list[Boundary]:
        """The boundaries the clock has reached (the samples decided them)."""
        del measured  # a current segmenter measures nothing
        self._decide()
        return self._due(final=False)

    def close(self, end_index: int) -> list[Boundary]:
        """The stream ended: an open weld ends at its last arc sample (``end_index`` at the
        latest); every boundary decided is returned."""
        if self._closed:
            return []
        self._closed = True
        self._end = max(self._end or 0, end_index)
        if self._arc is not None:
            self._finish(self._arc, cap=end_index)
        return self._due(final=True)

    # -- internals --------------------------------------------------------------------------

    def _decide(self) -> None:
        arc = self._arc
        if arc is None or arc.forced:
            if arc is not None and self._known - arc.last > self._bridge:
                self._arc = None  # the forced arc is over: a new one may start
            return
        if not arc.started and arc.last - arc.first >= self._min_weld:
            arc.started = True
            self._queue.append(Boundary("start", arc.first))
        if arc.started and arc.last - arc.first >= self._max_weld:
            self.forced_ends += 1
            arc.forced = True
            self._queue.append(Boundary("end", arc.first + self._max_weld, forced=True))
            return
        if self._known - arc.last > self._bridge:
            self._finish(arc)
        elif arc.started and self._stalled():
            self.stale_ends += 1
            self._finish(arc)

    def _stalled(self) -> bool:
        """No sample came in while stale_s of audio went by."""
        if self._end is None:
            return False
        heard = self._heard_at if self._heard_at is not None else 0
        return self._end - heard > self._stale

    def _finish(self, arc: _Arc, cap: int | None = None) -> None:
        """The arc is over: queue its weld if it was long enough."""
        if self._arc is arc:
            self._arc = None
        if arc.forced:
            return
        if not arc.started:
            if arc.last - arc.first < self._min_weld:
                self.discarded_arcs += 1
                return
            self._queue.append(Boundary("start", arc.first))
        end = arc.last if cap is None else max(arc.first, min(arc.last, cap))
        inside = [s for s in arc.samples if s.index <= end]
        current = np.array([s.current_a for s in inside])
        limit = dropout_threshold(current, self.params.threshold_a)
        dropouts = tuple(
            Dropout(a, b) for a, b in current_dropouts(inside, self.sample_rate, limit)
        )
        self._queue.append(Boundary("end", end, dropouts=dropouts))

    def _due(self, final: bool) -> list[Boundary]:
        """The queued boundaries the audio has reached (all of them when ``final``), in
        order; a start further back than the look-back is moved up to it."""
        out: list[Boundary] = []
        end = self._end or 0
        oldest = self._block_start - self._lookback  # what the caller still holds
        while self._queue and (final or self._queue[0].index <= end):
            b = self._queue.popleft()
            index = max(b.index, self._last_boundary)
            if b.kind == "start":
                if index < oldest:
                    self.late_starts += 1
                    index = oldest
                self._open = True
            else:
                self._open = False
            index = min(index, end) if not final else index
            self._last_boundary = index
            out.append(Boundary(b.kind, index, forced=b.forced, dropouts=b.dropouts))
        return out
