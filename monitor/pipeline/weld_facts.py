"""What a weld's result says besides its verdict: the arc's dropouts, the welder's process
record and, in replay, where the weld lies in its file.

The dropouts come from the segmenter that ended the weld (its end boundary carries them,
for the modes that hear them, ``RULES[mode].dropouts``); the process record from the
samples of the station's `ProcessTrack` inside [start, end] (`deploy.segment.process`).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def process_record(summary: ProcessSummary) -> ProcessRecord:
    """The wire form of a weld's process summary."""
    d = summary.dropouts
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
    )


def weld_facts(
    end: Boundary,
    start: int,
    rate: int,
    *,
    track: ProcessTrack | None,
    dropouts: bool,
    in_file: bool,
) -> WeldFacts:
    """The facts of the weld [start, end.index] (see the module docstring)."""
    summary = summarise(track.between(start, end.index + 1), end.index + 1, rate) if track else None
    return WeldFacts(
        dropouts=dropout_summary(end, start, rate) if dropouts else None,
        process=process_record(summary) if summary is not None else None,
        end_s=max(end.index, start) / rate if in_file else None,
    )
