"""Whole recordings through the streaming segmenters: the welds a station would report.

Training and evaluation use these to judge data by welds; they run the very segmenter the
monitor runs (the daemon's default unless another is given), so the boundaries equal the
streaming ones sample for sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deploy.segment.factory import default_segmenter
from deploy.segment.protocol import Boundary, Dropout, Segmenter, pair_boundaries


@dataclass(frozen=True)
class Weld:
    """One weld found in a recording: samples [start, end) and the arc's dropouts inside it."""

    start: int
    end: int
    dropouts: tuple[Dropout, ...] = ()
    forced: bool = False  # cut at the segmenter's longest weld


def welds_of(boundaries: list[Boundary]) -> list[Weld]:
    """Consecutive start/end boundaries as welds, with each end's dropouts and forced flag
    (the pairing and its checks are `pair_boundaries`')."""
    ends = [b for b in boundaries if b.kind == "end"]
    return [
        Weld(start, end, b.dropouts, b.forced)
        for (start, end), b in zip(pair_boundaries(boundaries), ends, strict=True)
    ]


def segment_welds(
    samples: np.ndarray, sample_rate: int, segmenter: Segmenter | None = None
) -> list[Weld]:
    """Welds in a whole mono recording by ``segmenter`` (a fresh one; default: the daemon's
    default segmenter at ``sample_rate``)."""
    seg = segmenter or default_segmenter(sample_rate)
    x = np.asarray(samples, dtype=np.float32)
    return welds_of(seg.process(x, 0) + seg.close(x.size))


def segment_recording(
    samples: np.ndarray, sample_rate: int, segmenter: Segmenter | None = None
) -> list[tuple[int, int]]:
    """(start, end) sample indices of the welds in a whole mono recording, by ``segmenter``
    (default: the daemon's default); equal to what it reports streaming the same samples."""
    return [(w.start, w.end) for w in segment_welds(samples, sample_rate, segmenter)]
