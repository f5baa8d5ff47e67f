"""The one seam between a station's audio and its welds: the `Segmenter` protocol.

A segmenter turns one station's mono stream (at the model rate, on the station's sample
clock) into `Boundary`s: a weld starts at sample ``index``, a weld ends at sample ``index``.
Every segmentation mode implements it (the arc gate here; the monitor's trigger and file
segmenters in ``monitor.segment``), so the pipeline, replay and training treat them alike.

Ownership: the caller owns the audio. A segmenter copies what it needs of a block (a partial
frame at most) and never holds on to the caller's array; the caller keeps at least
``lookback_samples`` of history, so it can cut windows from a start that lies in the past.
One segmenter serves one station for one stream epoch; after ``close`` it takes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from deploy.errors import WeldmonError


class SegmentationError(WeldmonError):
    """The segmenter was fed something it cannot place on the station's clock."""


@dataclass(frozen=True)
class Boundary:
    """A weld start or end on the station's clock."""

    kind: Literal["start", "end"]
    index: int  # sample index on the station's clock (model rate)


class Segmenter(Protocol):
    """What the pipeline needs from any segmenter (one per station and stream epoch)."""

    @property
    def in_weld(self) -> bool:
        """True between a start boundary and its end boundary."""
        ...

    @property
    def lookback_samples(self) -> int:
        """How far before the end of the latest block a start boundary may still lie."""
        ...

    def process(self, samples: np.ndarray, start_index: int) -> list[Boundary]:
        """Feed the next block (mono float32, continuing the previous one) whose first
        sample is ``start_index``; returns the boundaries it completes, in order."""
        ...

    def close(self, end_index: int) -> list[Boundary]:
        """The stream ends at ``end_index`` (one past its last sample): returns the last
        boundaries (an open weld ends there or earlier)."""
        ...


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
