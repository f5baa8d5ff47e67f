"""`weldmon segment`: what a segmenter cuts in a recording, and why, next to the arc current.

Each file is decoded at the model rate and run through the very segmenter the daemon would
build from the config (`monitor.segment.factory.new_segmenter`), whole, as
`deploy.segment.offline` does. A sensor log beside the file (same stem, ``.csv``) gives the
arc current, placed on the file's clock as replay places it
(`deploy.sensorlog.process_samples_beside`); each weld is then matched to its arc-current span
(`deploy.segment.boundary_check`). ``current`` mode cuts by that log and needs it.

For the figure (`monitor.segment.plot`) the segmenter's read-only ``trace`` hook records
the track it decides on (crackle: the smoothed log-kurtosis; arc: the arc probability;
gate: the smoothed level and its floor); the broadband level comes from
`deploy.segment.levels.frame_rms_db`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.audio import read_recording
from deploy.errors import WeldmonError
from deploy.frontend_params import FrontEndParams
from deploy.segment.boundary_check import BoundaryErrors, boundary_errors, sample_arcs
from deploy.segment.current import CurrentSegmenter
from deploy.segment.levels import frame_rms_db
from deploy.segment.modes import SegmentationMode
from deploy.segment.offline import segment_welds
from deploy.segment.process import ProcessSample
from deploy.sensorlog import process_samples_beside
from monitor.segment.factory import SegmentationConfig, new_segmenter

RATE_HZ = FrontEndParams().sample_rate  # the model rate every segmenter runs at in the daemon
LEVEL_FRAME_S = 0.05  # the plotted broadband level's frame
INSPECTABLE = (
    SegmentationMode.CRACKLE,
    SegmentationMode.ARC,
    SegmentationMode.GATE,
    SegmentationMode.CURRENT,
)


class NoSensorLogError(WeldmonError):
    """``current`` mode of a file without a usable sensor log beside it."""


@dataclass
class FileSegments:
    """One recording as a segmenter cut it (times in seconds from the file's start)."""

    path: Path
    mode: SegmentationMode
    duration_s: float
    welds: list[tuple[float, float]]
    arcs: list[tuple[float, float]] | None  # arc-current spans; None without a sensor log
    errors: list[BoundaryErrors | None]  # per weld; None: no log, or no arc overlaps it
    no_log_reason: str = ""
    level_db: np.ndarray = field(default_factory=lambda: np.zeros(0))  # LEVEL_FRAME_S frames
    trace: list[tuple[float, float, float]] = field(default_factory=list)  # (s, value, ref)
    current: tuple[np.ndarray, np.ndarray] | None = None  # (s, A) of the log's rows

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per weld (with its current span and errors when known),
        then one per arc-current span no weld matched (``weld`` null)."""
        out = []
        for k, ((start, end), err) in enumerate(zip(self.welds, self.errors, strict=True)):
            rec: dict[str, Any] = {
                "file": str(self.path),
                "mode": self.mode.value,
                "weld": k + 1,
                "start_s": round(start, 3),
                "end_s": round(end, 3),
                "length_s": round(end - start, 3),
            }
            if self.arcs is not None:
                rec["current_start_s"] = None if err is None else round(err.arc_start_s, 3)
                rec["current_end_s"] = None if err is None else round(err.arc_end_s, 3)
                rec["start_error_s"] = None if err is None else round(err.start_error_s, 3)
                rec["end_error_s"] = None if err is None else round(err.end_error_s, 3)
            out.append(rec)
        for a, b in self.missed_arcs():  # the current burned, the audio cut no weld there
            out.append(
                {
                    "file": str(self.path),
                    "mode": self.mode.value,
                    "weld": None,
                    "current_start_s": round(a, 3),
                    "current_end_s": round(b, 3),
                }
            )
        return out

    def missed_arcs(self) -> list[tuple[float, float]]:
        """Arc-current spans no weld was matched to (the audio missed them)."""
        matched = {(e.arc_start_s, e.arc_end_s) for e in self.errors if e is not None}
        return [a for a in self.arcs or [] if a not in matched]


def inspect_file(
    path: Path, cfg: SegmentationConfig, *, traced: bool = False, rate: int = RATE_HZ
) -> FileSegments:
    """Segment ``path`` by ``cfg`` (its mode one of INSPECTABLE); with ``traced``, keep the
    level and the segmenter's track for a figure. Raises AudioError for unreadable audio and
    NoSensorLogError for ``current`` mode without a usable log."""
    mono = read_recording(path, rate).samples.mean(axis=0).astype(np.float32)
    samples, why = process_samples_beside(path, mono, rate)
    segmenter = new_segmenter(cfg, rate)
    if isinstance(segmenter, CurrentSegmenter):
        if samples is None:
            raise NoSensorLogError(f"{path}: current mode needs the run's sensor log: {why}")
        for sample in samples:
            segmenter.push(sample)
    trace: list[tuple[int, float, float]] | None = [] if traced else None
    if traced and hasattr(segmenter, "trace"):
        segmenter.trace = trace
    welds = [(w.start / rate, w.end / rate) for w in segment_welds(mono, rate, segmenter)]
    arcs = sample_arcs(samples, rate) if samples is not None else None
    errors = [boundary_errors(w, arcs) if arcs is not None else None for w in welds]
    result = FileSegments(path, cfg.mode, mono.size / rate, welds, arcs, errors, why)
    if traced:
        frame = round(LEVEL_FRAME_S * rate)
        result.level_db = frame_rms_db(mono[: mono.size // frame * frame], frame)
        result.trace = [(s / rate, v, ref) for s, v, ref in trace or []]
        if samples is not None:
            result.current = _current_of(samples, rate)
    return result


def _current_of(samples: list[ProcessSample], rate: int) -> tuple[np.ndarray, np.ndarray]:
    times = np.array([s.index / rate for s in samples])
    return times, np.array([s.current_a for s in samples])


def table_lines(result: FileSegments) -> list[str]:
    """The human-readable table of one file's welds (and the arcs the audio missed)."""
    lines = [f"{result.path}  ({result.mode.value}, {result.duration_s:.1f} s)"]
    if result.arcs is None:
        lines.append(f"  no arc current: {result.no_log_reason}")
    head = f"  {'weld':>4} {'start':>8} {'end':>8} {'length':>7}"
    if result.arcs is not None:
        head += f" {'cur.start':>9} {'cur.end':>8} {'err.start':>9} {'err.end':>8}"
    lines.append(head)
    for rec in result.records():
        if rec["weld"] is None:
            continue  # a missed arc: listed below
        row = f"  {rec['weld']:>4} {rec['start_s']:>8.2f} {rec['end_s']:>8.2f}"
        row += f" {rec['length_s']:>7.2f}"
        if result.arcs is not None:
            row += " " + " ".join(
                f"{_num(rec[k], signed):>{w}}"
                for k, w, signed in (
                    ("current_start_s", 9, False),
                    ("current_end_s", 8, False),
                    ("start_error_s", 9, True),
                    ("end_error_s", 8, True),
                )
            )
        lines.append(row)
    if not result.welds:
        lines.append("     -   no weld found")
    for a, b in result.missed_arcs():
        lines.append(f"  missed: arc current {a:.2f}-{b:.2f} s has no weld")
    return lines


def _num(value: float | None, signed: bool) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"
