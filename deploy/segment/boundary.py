"""Weld boundaries on a station's clock (the seam every segmenter speaks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
