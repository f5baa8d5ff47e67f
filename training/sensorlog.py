"""The robot's sensor log (one CSV per run): arc-on intervals and their clock offset to audio.

The log has columns ``Date, Time, Part No, Pressure, CO2 Weld Flow, Feed, Primary Weld
Current, Wire Consumed, Secondary Weld Voltage, Remarks`` at about 9 rows/s; its clock is
not the audio recorder's, so arc times are relative to the log's first row and
``estimate_clock_offset`` finds the shift that puts them on the audio's time axis::

    audio_time_s = log_time_s + offset_s

The offset is estimated from the raw audio level envelope (no gate, no thresholds, no
detected boundaries), so checking a gate against offset-corrected log times is not circular.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from deploy.errors import WeldmonError

# The arc burns when the primary weld current exceeds this (A). Before ignition the wire
# feeder shows 2-4 A of creep current for about a second; a burning MAG arc draws 100-300 A.
ARC_CURRENT_A = 5.0
# Dropouts in the logged current shorter than this (s) belong to the same arc: burn-through
# runs show the current dipping below 5 A for one or two rows (about 0.1-0.2 s) mid-weld.
ARC_BRIDGE_S = 1.0
# How far the log clock may be from the audio clock (s): the dataset README says a second or
# two; +-3 s leaves margin on both sides.
OFFSET_SEARCH_S = 3.0
# Resolution of the offset search (s): a tenth of the 0.1 s log row spacing is finer than the
# log itself can tell; finer only costs time.
OFFSET_STEP_S = 0.01

_TIME_COLUMN = "Time"
_DATE_COLUMN = "Date"
_CURRENT_COLUMN = "Primary Weld Current"
_DATETIME_FORMATS = ("%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S")


class SensorLogError(WeldmonError):
    """A sensor CSV cannot be read or does not hold what an arc-time estimate needs."""


@dataclass(frozen=True)
class SensorLog:
    """One run's log: row times (s since the first row) and primary weld current (A)."""

    path: Path
    time_s: np.ndarray
    current_a: np.ndarray

    def arc_mask(self, threshold_a: float = ARC_CURRENT_A) -> np.ndarray:
        """True for every row whose current says the arc burns."""
        return self.current_a > threshold_a


def _parse_time(date: str, time: str, path: Path, line: int) -> datetime:
    text = f"{date.strip()} {time.strip()}"
    for fmt in _DATETIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise SensorLogError(f"{path}:{line}: cannot read date/time {text!r}")


def read_sensor_log(path: Path) -> SensorLog:
    """Read a run's sensor CSV (header names are matched with surrounding spaces stripped).

    Blank lines are skipped; any other unreadable row raises ``SensorLogError`` naming the
    file and line, since a silently dropped row would shift the arc times.
    """
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SensorLogError(f"{path}: cannot read sensor log: {exc}") from exc
    if not rows:
        raise SensorLogError(f"{path}: empty sensor log")
    header = [name.strip() for name in rows[0]]
    missing = [c for c in (_DATE_COLUMN, _TIME_COLUMN, _CURRENT_COLUMN) if c not in header]
    if missing:
        raise SensorLogError(f"{path}: missing column(s) {missing}; header is {header}")
    di, ti, ci = (header.index(c) for c in (_DATE_COLUMN, _TIME_COLUMN, _CURRENT_COLUMN))
    stamps: list[datetime] = []
    current: list[float] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(di, ti, ci):
            raise SensorLogError(f"{path}:{line}: {len(row)} fields, expected {len(header)}")
        stamps.append(_parse_time(row[di], row[ti], path, line))
        try:
            current.append(float(row[ci]))
        except ValueError as exc:
            raise SensorLogError(f"{path}:{line}: {_CURRENT_COLUMN} {row[ci]!r}") from exc
    if len(stamps) < 2:
        raise SensorLogError(f"{path}: {len(stamps)} data row(s); need at least 2")
    time_s = np.array([(s - stamps[0]).total_seconds() for s in stamps])
    if np.any(np.diff(time_s) < 0):
        line = int(np.flatnonzero(np.diff(time_s) < 0)[0]) + 3
        raise SensorLogError(f"{path}: time goes backwards near line {line}")
    current_a = np.array(current)
    if not np.all(np.isfinite(current_a)):
        raise SensorLogError(f"{path}: {_CURRENT_COLUMN} holds NaN or Inf")
    return SensorLog(path=Path(path), time_s=time_s, current_a=current_a)


def arc_intervals(
    log: SensorLog, threshold_a: float = ARC_CURRENT_A, bridge_s: float = ARC_BRIDGE_S
) -> list[tuple[float, float]]:
    """Arc-on intervals (start_s, end_s) in log time: first to last row above the threshold.

    Runs of on-rows separated by less than ``bridge_s`` of off-rows are one interval.
    """
    on = np.flatnonzero(log.arc_mask(threshold_a))
    if on.size == 0:
        return []
    t = log.time_s[on]
    # A new interval starts where the gap between consecutive on-rows exceeds the bridge.
    breaks = np.flatnonzero(np.diff(t) > bridge_s)
    starts = np.concatenate(([t[0]], t[breaks + 1]))
    ends = np.concatenate((t[breaks], [t[-1]]))
    return [(float(a), float(b)) for a, b in zip(starts, ends, strict=True)]


def _arc_mask_at(log: SensorLog, times_s: np.ndarray, threshold_a: float) -> np.ndarray:
    """The log's arc mask sampled at ``times_s`` (log time), holding each row's value until
    the next row; times outside the log count as arc off."""
    idx = np.searchsorted(log.time_s, times_s, side="right") - 1
    inside = (idx >= 0) & (times_s <= log.time_s[-1])
    mask = np.zeros(times_s.shape, dtype=bool)
    mask[inside] = log.arc_mask(threshold_a)[idx[inside]]
    return mask


def estimate_clock_offset(
    log: SensorLog,
    level_db: np.ndarray,
    frame_s: float,
    search_s: float = OFFSET_SEARCH_S,
    step_s: float = OFFSET_STEP_S,
    threshold_a: float = ARC_CURRENT_A,
) -> float:
    """Offset (s) with ``audio_time = log_time + offset`` that best lines the log's arc-on mask
    up with the audio's level envelope.

    ``level_db`` is one level per audio frame of ``frame_s`` seconds (frame k covers
    ``[k*frame_s, (k+1)*frame_s)``), e.g. from ``deploy.segment.levels``. The score is the Pearson
    correlation between the shifted 0/1 arc mask and the level envelope, maximised over a
    grid of ``step_s`` within +-``search_s``. It uses no threshold on the audio and no gate,
    so it cannot inherit a gate's bias; ties go to the offset nearest zero.
    """
    level = np.asarray(level_db, dtype=np.float64)
    if level.ndim != 1 or level.size < 2 or not np.all(np.isfinite(level)):
        raise SensorLogError(f"{log.path}: level envelope must be 1-D, finite, >= 2 frames")
    if not log.arc_mask(threshold_a).any():
        raise SensorLogError(f"{log.path}: no row above {threshold_a} A: no arc to align")
    centres = (np.arange(level.size) + 0.5) * frame_s
    centred = level - level.mean()
    n_steps = round(search_s / step_s)
    offsets = np.arange(-n_steps, n_steps + 1) * step_s
    scores = np.full(offsets.shape, -np.inf)
    for k, offset in enumerate(offsets):
        mask = _arc_mask_at(log, centres - offset, threshold_a).astype(np.float64)
        spread = mask.std()
        if spread > 0.0:
            scores[k] = float(np.dot(mask - mask.mean(), centred)) / spread
    if not np.isfinite(scores).any():
        raise SensorLogError(f"{log.path}: the arc never overlaps the audio within +-{search_s} s")
    best = np.flatnonzero(scores >= scores.max() - 1e-9 * abs(scores.max()))
    return float(offsets[best[np.argmin(np.abs(offsets[best]))]])
