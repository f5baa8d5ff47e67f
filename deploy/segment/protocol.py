"""The one seam between a station's audio and its welds: the `Segmenter` protocol.

A segmenter turns one station's mono stream (at the model rate, on the station's sample
clock) into `Boundary`s: a weld starts at sample ``index``, a weld ends at sample ``index``.
Every segmentation mode implements it (the arc gate here; the monitor's trigger and file
segmenters in ``monitor.segment``), so the pipeline, replay and training treat them alike.

One block goes through a segmenter in two steps, so that the costly, stateless part can be
done for many stations in one call: ``take`` buffers the block and returns the whole
`Frames` it completes with the `Meter` that measures them; ``decide`` takes one measurement
per frame and steps the segmenter's state. `process_blocks` runs both for a set of stations
and measures the frames of segmenters that share a meter in one call (a segmenter that does
not listen to the audio returns no frames); `Segmenter.process` does it for one.

Ownership: the caller owns the audio. A segmenter copies what it needs of a block (a partial
frame at most) and keeps no reference to the caller's array; the frames ``take`` returns are
the segmenter's own copy, for the meter only. The caller keeps at least ``lookback_samples``
of history, so it can cut windows from a start that lies in the past. One segmenter serves
one station for one stream epoch; ``take`` and ``decide`` alternate, and after ``close`` it
takes nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from deploy.errors import WeldmonError


class SegmentationError(WeldmonError):
    """The segmenter was fed something it cannot place on the station's clock."""


@dataclass(frozen=True, slots=True)
class Dropout:
    """An interruption of the arc inside one weld: samples [start, end) on the station's clock."""

    start: int
    end: int


@dataclass(frozen=True)
class Boundary:
    """A weld start or end on the station's clock."""

    kind: Literal["start", "end"]
    index: int  # sample index on the station's clock (model rate)
    forced: bool = False  # an end the segmenter forced at its longest weld (max_weld_s)
    dropouts: tuple[Dropout, ...] = ()  # on an end: the arc's interruptions inside the weld


class Meter(Protocol):
    """A stateless measurement of whole frames: one value per frame, each frame measured on
    its own (so one call over many stations' frames gives each frame its own value)."""

    @property
    def frame_len(self) -> int:
        """Samples per frame."""
        ...

    def measure(self, samples: np.ndarray) -> np.ndarray:
        """One value per frame of ``samples`` (flat, a whole number of frames)."""
        ...


@dataclass(frozen=True)
class Frames:
    """The whole frames one block completed, and the meter they are measured with."""

    samples: np.ndarray  # flat float32, a whole number of meter.frame_len frames
    meter: Meter | None  # None: nothing to measure (a segmenter that does not listen)

    @property
    def count(self) -> int:
        """How many frames (0 without a meter)."""
        return 0 if self.meter is None else self.samples.size // self.meter.frame_len


NO_FRAMES = Frames(np.zeros(0, dtype=np.float32), None)
NO_MEASUREMENTS = np.zeros(0, dtype=np.float64)


class Segmenter(Protocol):
    """What the pipeline needs from any segmenter (one per station and stream epoch).

    Implementations subclass it explicitly to inherit `process`."""

    @property
    def in_weld(self) -> bool:
        """True between a start boundary and its end boundary."""
        ...

    @property
    def lookback_samples(self) -> int:
        """How far before the end of the latest block a start boundary may still lie."""
        ...

    @property
    def arc_confirmed_until(self) -> int:
        """While in a weld, the sample index up to which its arc is confirmed: the weld's end
        boundary, whenever it comes, lies at or after it (0 outside a weld). A window of the
        weld that ends by it is certain to be judged in the weld's result, so the early
        alert rests only on such windows (`monitor.pipeline.tracker`)."""
        ...

    def take(self, samples: np.ndarray, start_index: int) -> Frames:
        """Buffer the next block (mono float32, continuing the previous one) whose first
        sample is ``start_index``; returns the whole frames it completes (maybe none)."""
        ...

    def decide(self, measured: np.ndarray) -> list[Boundary]:
        """The meter's values for the frames the last ``take`` returned, one per frame
        (empty for no frames); returns the boundaries they complete, in order."""
        ...

    def close(self, end_index: int) -> list[Boundary]:
        """The stream ends at ``end_index`` (one past its last sample): returns the last
        boundaries (an open weld ends there or earlier)."""
        ...

    def process(self, samples: np.ndarray, start_index: int) -> list[Boundary]:
        """``take`` then ``decide`` for one block; returns the boundaries it completes."""
        return process_blocks([self], [(samples, start_index)])[0]


def process_blocks(
    segmenters: Sequence[Segmenter], blocks: Sequence[tuple[np.ndarray, int]]
) -> list[list[Boundary]]:
    """One block (samples, start_index) for each segmenter; the frames of segmenters that
    share a meter are measured in one call (the same values as one call each: a meter
    measures every frame on its own). Returns each segmenter's boundaries."""
    frames = [seg.take(x, start) for seg, (x, start) in zip(segmenters, blocks, strict=True)]
    measured = [NO_MEASUREMENTS] * len(frames)
    groups: dict[int, list[int]] = {}
    for i, f in enumerate(frames):
        if f.count:
            groups.setdefault(id(f.meter), []).append(i)
    for members in groups.values():
        meter = frames[members[0]].meter
        assert meter is not None
        if len(members) == 1:
            measured[members[0]] = meter.measure(frames[members[0]].samples)
            continue
        values = meter.measure(np.concatenate([frames[i].samples for i in members]))
        cuts = np.cumsum([frames[i].count for i in members])[:-1]
        for i, part in zip(members, np.split(values, cuts), strict=True):
            measured[i] = part
    return [seg.decide(m) for seg, m in zip(segmenters, measured, strict=True)]


def pair_boundaries(boundaries: list[Boundary]) -> list[tuple[int, int]]:
    """Pair consecutive start/end boundaries into (start, end) intervals."""
    welds: list[tuple[int, int]] = []
    start: int | None = None
    for b in boundaries:
        if b.kind == "start":
            if start is not None:
                raise SegmentationError(f"start at {b.index} while a weld is open since {start}")
            start = b.index
        else:
            if start is None:
                raise SegmentationError(f"end at {b.index} without a start")
            welds.append((start, b.index))
            start = None
    if start is not None:
        raise SegmentationError(f"weld open since {start} has no end")
    return welds
