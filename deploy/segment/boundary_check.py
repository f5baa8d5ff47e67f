"""How far an audio segmenter's weld lies from the welder's arc current: the self-check.

Where the power source's current is known (a sensor log beside a recording, or live process
data), each weld the audio cut is matched to the arc-current span it overlaps most (the arc
rule of `deploy.segment.process.arc_spans`); its start and end errors are audio minus
current, in seconds: negative means the audio cut before the current, positive after. A weld
that overlaps no arc at all is unmatched (the audio heard a weld the current did not burn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deploy.segment.process import ARC_BRIDGE_S, ProcessSample, arc_spans


@dataclass(frozen=True, slots=True)
class BoundaryErrors:
    """One audio weld against its arc-current span (all in seconds on the same clock)."""

    arc_start_s: float
    arc_end_s: float
    start_error_s: float  # audio start minus arc start
    end_error_s: float  # audio end minus arc end


def matching_arc(
    weld: tuple[float, float], arcs: list[tuple[float, float]]
) -> tuple[float, float] | None:
    """The span of ``arcs`` that overlaps ``weld`` most (the earlier one on a tie); None when
    none overlaps it."""
    best: tuple[float, float] | None = None
    best_overlap = 0.0
    for arc in arcs:
        overlap = min(weld[1], arc[1]) - max(weld[0], arc[0])
        if overlap > best_overlap:
            best, best_overlap = arc, overlap
    return best


def boundary_errors(
    weld: tuple[float, float], arcs: list[tuple[float, float]]
) -> BoundaryErrors | None:
    """``weld``'s start and end errors against the arc span it overlaps most; None when it
    overlaps none."""
    arc = matching_arc(weld, arcs)
    if arc is None:
        return None
    return BoundaryErrors(arc[0], arc[1], weld[0] - arc[0], weld[1] - arc[1])


def sample_arcs(samples: list[ProcessSample], rate: int) -> list[tuple[float, float]]:
    """Arc spans (s on the station's clock) of process samples placed at ``rate``."""
    if not samples:
        return []
    times = np.array([s.index for s in samples], dtype=np.float64) / rate
    return arc_spans(times, np.array([s.current_a for s in samples]), bridge=ARC_BRIDGE_S)
