"""The robot's sensor log (one CSV per run): arc-on intervals, the welder's process data and
the log's clock offset to the audio.

The log has columns ``Date, Time, Part No, Pressure, CO2 Weld Flow, Feed, Primary Weld
Current, Wire Consumed, Secondary Weld Voltage, Remarks`` at about 9 rows/s; its clock is
not the audio recorder's, so times are relative to the log's first row and
``estimate_clock_offset`` finds the shift that puts them on the audio's time axis::

    audio_time_s = log_time_s + offset_s

The offset is estimated from the raw audio level envelope (no gate, no thresholds, no
detected boundaries), so checking a segmenter against offset-corrected log times is not
circular. ``audio_clock_offset`` does it for a decoded recording.

Used by training (the arc as ground truth), the segmentation bench and replay's ``current``
mode (the log as the welder's process data). The dataset does not say in which unit
``Wire Consumed`` counts; read as millimetres its rate while welding is 2.8-5.6 m/min in 20
of the 23 runs and 10 m/min in the two 290 A runs (usual MAG wire feeds; cm or inches would
give 28-100 m/min), so it is read as mm.
``Feed`` (2-53, not monotonic) is left out: its meaning is not documented.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from deploy.errors import WeldmonError
from deploy.segment.levels import frame_rms_db
from deploy.segment.process import ARC_BRIDGE_S, ARC_CURRENT_A, ProcessSample, arc_spans

# How far the log clock may be from the audio clock (s): the dataset README says a second or
# two; +-3 s leaves margin on both sides.
OFFSET_SEARCH_S = 3.0
# Resolution of the offset search (s): a tenth of the 0.1 s log row spacing is finer than the
# log itself can tell; finer only costs time.
OFFSET_STEP_S = 0.01

# Frame of the broadband level envelope the offset is estimated on (s): twice the log's own
# resolution (~0.1 s rows).
OFFSET_FRAME_S = 0.05

_TIME_COLUMN = "Time"
_DATE_COLUMN = "Date"
_CURRENT_COLUMN = "Primary Weld Current"
_VOLTAGE_COLUMN = "Secondary Weld Voltage"
_WIRE_COLUMN = "Wire Consumed"  # a cumulative counter, read as mm (see the module docstring)
_DATETIME_FORMATS = ("%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S")


class SensorLogError(WeldmonError):
    """A sensor CSV cannot be read or does not hold what an arc-time estimate needs."""


@dataclass(frozen=True)
class SensorLog:
    """One run's log: row times (s since the first row), primary weld current (A) and, where
    the log has them, secondary weld voltage (V) and the wire counter (m); a row whose
    optional value is blank or unreadable holds NaN there (counted in ``bad_values``)."""

    path: Path
    time_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray | None = None
    wire_consumed_m: np.ndarray | None = None
    bad_values: int = 0

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
    optional = {c: header.index(c) for c in (_VOLTAGE_COLUMN, _WIRE_COLUMN) if c in header}
    stamps: list[datetime] = []
    current: list[float] = []
    extra: dict[str, list[float]] = {c: [] for c in optional}
    bad = 0
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
        for column, index in optional.items():
            # Voltage and wire only inform the process summary: a bad cell is NaN and
            # counted, never a reason to lose the arc times.
            try:
                value = float(row[index]) if index < len(row) else math.nan
            except ValueError:
                value = math.nan
            bad += not math.isfinite(value)
            extra[column].append(value)
    if len(stamps) < 2:
        raise SensorLogError(f"{path}: {len(stamps)} data row(s); need at least 2")
    time_s = np.array([(s - stamps[0]).total_seconds() for s in stamps])
    if np.any(np.diff(time_s) < 0):
        line = int(np.flatnonzero(np.diff(time_s) < 0)[0]) + 3
        raise SensorLogError(f"{path}: time goes backwards near line {line}")
    current_a = np.array(current)
    if not np.all(np.isfinite(current_a)):
        raise SensorLogError(f"{path}: {_CURRENT_COLUMN} holds NaN or Inf")
    voltage = np.array(extra[_VOLTAGE_COLUMN]) if _VOLTAGE_COLUMN in extra else None
    wire = np.array(extra[_WIRE_COLUMN]) / 1000.0 if _WIRE_COLUMN in extra else None
    return SensorLog(Path(path), time_s, current_a, voltage, wire, bad)


def arc_intervals(
    log: SensorLog, threshold_a: float = ARC_CURRENT_A, bridge_s: float = ARC_BRIDGE_S
) -> list[tuple[float, float]]:
    """Arc-on intervals (start_s, end_s) in log time: first to last row above the threshold.

    Runs of on-rows separated by less than ``bridge_s`` of off-rows are one interval.
    """
    return arc_spans(log.time_s, log.current_a, threshold_a, bridge_s)


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


def audio_clock_offset(log: SensorLog, mono: np.ndarray, sample_rate: int) -> float:
    """``estimate_clock_offset`` of ``log`` against a decoded mono recording (its broadband
    envelope in ``OFFSET_FRAME_S`` frames): audio time = log time + the result."""
    frame_len = round(OFFSET_FRAME_S * sample_rate)
    if mono.size < 2 * frame_len:
        raise SensorLogError(f"{log.path}: the recording is too short to align the log to")
    level = frame_rms_db(mono[: mono.size // frame_len * frame_len], frame_len)
    return estimate_clock_offset(log, level, frame_len / sample_rate)


def process_samples(log: SensorLog, offset_s: float, sample_rate: int) -> list[ProcessSample]:
    """The log's rows as process samples on the audio's sample clock (``audio time = log
    time + offset_s``, at ``sample_rate``): current, voltage and the wire counter."""
    n = log.time_s.size
    voltage = log.voltage_v if log.voltage_v is not None else np.full(n, math.nan)
    wire = log.wire_consumed_m if log.wire_consumed_m is not None else np.full(n, math.nan)
    return [
        ProcessSample(
            round((float(t) + offset_s) * sample_rate),
            float(i),
            float(v),
            wire_consumed_m=float(w),
        )
        for t, i, v, w in zip(log.time_s, log.current_a, voltage, wire, strict=True)
    ]


def process_samples_beside(
    path: Path, mono: np.ndarray, rate: int
) -> tuple[list[ProcessSample] | None, str]:
    """The sensor log beside the recording ``path`` (same stem, ``.csv``: the dataset's
    layout) as process samples on the recording's clock, ``mono`` being its audio at
    ``rate``; or None and why not (no log, an unreadable one, or one that cannot be lined up
    with the audio). Replay and `weldmon segment` read the welder's current this way."""
    csv_path = Path(path).with_suffix(".csv")
    if not csv_path.is_file():
        return None, f"no {csv_path.name} beside it"
    try:
        sensor_log = read_sensor_log(csv_path)
        offset = audio_clock_offset(sensor_log, mono, rate)
    except SensorLogError as exc:
        return None, str(exc)
    return process_samples(sensor_log, offset, rate), ""
