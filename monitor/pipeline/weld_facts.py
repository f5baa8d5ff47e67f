"""What a weld's result says besides its verdict: the arc's dropouts, the welder's process
record and, in replay, where the weld lies in its file.

The dropouts come from the segmenter that ended the weld (its end boundary carries them,
for the modes that hear them, ``RULES[mode].dropouts``); the process record from the
samples of the station's `ProcessTrack` inside [start, end] (`deploy.segment.process`).
Where the audio cut the weld (``self_check``), the record also says how far its start and
end lie from the arc current's (`deploy.segment.boundary_check`): the arc span is taken
from the samples within ``CHECK_REACH_S`` of the weld that have arrived by its end, so a
live current that runs on past the audio's end counts up to its latest sample then.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy.segment.boundary_check import BoundaryErrors, boundary_errors, sample_arcs
from deploy.segment.process import ProcessSummary, ProcessTrack, summarise
from deploy.segment.protocol import Boundary
from monitor.events import DropoutSummary, ProcessRecord


@dataclass(frozen=True)
class WeldFacts:
    """The optional result fields of one weld."""

    dropouts: DropoutSummary | None = None
    process: ProcessRecord | None = None
    end_s: float | None = None  # the end in seconds from the file's start (replay only)


def dropout_summary(end: Boundary, start: int, rate: int) -> DropoutSummary:
    """The dropouts an end boundary reports, clipped to the weld [start, end]."""
    lengths = [
        (min(d.end, end.index) - max(d.start, start)) / rate
        for d in end.dropouts
        if min(d.end, end.index) > max(d.start, start)
    ]
    if not lengths:
        return DropoutSummary(count=0, longest_s=0.0, total_s=0.0)
    return DropoutSummary(count=len(lengths), longest_s=max(lengths), total_s=sum(lengths))


# How far around a weld the self-check looks for its arc-current span (s): an audio cut
# that misses the arc by more than this is not matched to it.
CHECK_REACH_S = 20.0


@dataclass(frozen=True)
class SelfCheck:
    """The audio weld against the arc current: ``errors`` None when no arc overlaps it."""

    errors: BoundaryErrors | None


def self_check(track: ProcessTrack, start: int, end: int, rate: int) -> SelfCheck:
    """The weld [start, end] (sample indices) against the arc spans of ``track``'s samples
    within CHECK_REACH_S of it."""
    reach = round(CHECK_REACH_S * rate)
    arcs = sample_arcs(track.between(start - reach, end + reach + 1), rate)
    return SelfCheck(boundary_errors((start / rate, end / rate), arcs))


def process_record(summary: ProcessSummary, check: SelfCheck | None = None) -> ProcessRecord:
    """The wire form of a weld's process summary (and its self-check, when made)."""
    d = summary.dropouts
    errors = check.errors if check is not None else None
    return ProcessRecord(
        samples=summary.samples,
        arc_s=summary.arc_s,
        current_mean_a=summary.current_mean_a,
        current_std_a=summary.current_std_a,
        voltage_mean_v=summary.voltage_mean_v,
        voltage_std_v=summary.voltage_std_v,
        energy_kj=summary.energy_kj,
        wire_consumed_m=summary.wire_consumed_m,
        dropouts=DropoutSummary(count=d.count, longest_s=d.longest_s, total_s=d.total_s),
        arc_matched=None if check is None else errors is not None,
        start_error_s=None if errors is None else round(errors.start_error_s, 3),
        end_error_s=None if errors is None else round(errors.end_error_s, 3),
    )


def weld_facts(
    end: Boundary,
    start: int,
    rate: int,
    *,
    track: ProcessTrack | None,
    dropouts: bool,
    in_file: bool,
    check: bool = False,
) -> WeldFacts:
    """The facts of the weld [start, end.index] (see the module docstring); ``check``: the
    audio cut it, so its process record says how far it lies from the arc current."""
    summary = summarise(track.between(start, end.index + 1), end.index + 1, rate) if track else None
    checked = (
        self_check(track, start, end.index, rate)
        if check and track is not None and summary is not None
        else None
    )
    return WeldFacts(
        dropouts=dropout_summary(end, start, rate) if dropouts else None,
        process=process_record(summary, checked) if summary is not None else None,
        end_s=max(end.index, start) / rate if in_file else None,
    )
