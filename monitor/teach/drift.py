"""Drift of a taught station: its recent good welds against the welds it was taught with.

A taught threshold assumes the cell still sounds as it did when it was taught. When the
torch wears, the gas or wire changes or the microphone is moved, the good welds' scores
wander off, and long before the threshold is crossed by good parts the station's verdicts
stop meaning what they did. So per taught station the daemon keeps the pooled scores
(p_defect) of its last `drift_welds` welds judged good under that calibration, and once at
least `drift_min_welds` are in, compares their median with the taught reference (the taught
welds' median pooled score). The *share* is how far the median moved, as a share of the
distance from the reference to the taught threshold (0: where it was taught, 1: as far as
the threshold); past `drift_share` the station needs recalibrating.

One warning per episode, not one per weld: `DriftWatch.add` says True only when the share
first goes past the limit; it re-arms when the share comes back under it, and a new
calibration (a new teach-in accepted) starts a new watch. Both directions count: scores
that fall (a microphone knocked away from the seam hears less) drift as much as scores that
rise.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field


@dataclass
class DriftWatch:
    """One calibration's recent good welds; `add` each, read `share` and `alarmed`."""

    teach_in_id: str  # the calibration it watches: a new one starts a new watch
    reference: float  # the taught welds' median pooled score
    threshold: float  # the taught threshold
    limit: float  # `drift_share`: past it, the station needs recalibrating
    min_welds: int
    scores: deque[float] = field(default_factory=deque)  # bounded: maxlen `drift_welds`
    alarmed: bool = False  # an episode is running (its warning was given)

    @classmethod
    def start(
        cls,
        teach_in_id: str,
        reference: float,
        threshold: float,
        *,
        welds: int,
        min_welds: int,
        limit: float,
    ) -> DriftWatch:
        """A watch of the last `welds` good welds of one calibration."""
        return cls(teach_in_id, reference, threshold, limit, min_welds, deque(maxlen=welds))

    @property
    def share(self) -> float | None:
        """How far the recent median moved from the reference, as a share of the distance
        from the reference to the threshold; None until `min_welds` welds are in."""
        if len(self.scores) < self.min_welds:
            return None
        # the threshold sits above every taught weld, so the span is positive; the floor
        # keeps a degenerate calibration (all taught welds alike) from dividing by zero
        span = max(abs(self.threshold - self.reference), 1e-6)
        return abs(statistics.median(self.scores) - self.reference) / span

    def add(self, p_defect: float) -> bool:
        """One weld judged good; True when this weld starts a drift episode."""
        if not math.isfinite(p_defect):
            return False
        self.scores.append(p_defect)
        share = self.share
        if share is None:
            return False
        if share <= self.limit:
            self.alarmed = False  # back within the limit: the next episode warns again
            return False
        started, self.alarmed = not self.alarmed, True
        return started
