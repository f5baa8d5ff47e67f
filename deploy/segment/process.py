"""The welder's process data on a station's clock, and each weld's process summary.

Power sources report current, voltage and wire feed about ten times a second. Each sample is
placed on the station's sample clock (``index``, at the model rate) by whoever receives it
(the pipeline, from an MQTT message's UTC time or a sensor log's offset-corrected time).
``ProcessTrack`` keeps a station's recent samples in time order and counts the ones it has
to skip; ``summarise`` turns the samples inside one weld into the record weld-monitoring users
keep from their power sources: arc time, mean and spread of current and voltage, arc energy,
wire consumed and the arc's dropouts.

Sample-and-hold: each sample stands for the time until the next one, at most ``MAX_HOLD_S``
(a gap in the data is not an arc), and never past the weld's end.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

# The arc burns when the primary weld current exceeds this (A). Before ignition the wire
# feeder shows 2-4 A of creep current for about a second; a burning MAG arc draws 100-300 A.
ARC_CURRENT_A = 5.0
# Current dips shorter than this (s) belong to the same arc: burn-through runs show the
# current dipping below 5 A for one or two samples (about 0.1-0.2 s) mid-weld.
ARC_BRIDGE_S = 1.0
# The arc counts as interrupted while its current is under this fraction of the weld's
# median arc current (and always under ARC_CURRENT_A). The burn-through runs' current
# collapses to 10-30 % of its median 18-23 times per weld, mostly without falling under
# 5 A, and those collapses are where their audio loses its crackle (docs/segmentation.md);
# a steady weld's current stays above half its median.
DROPOUT_FRACTION = 0.3
# Longest time one sample may stand for (s): at ~10 samples/s a longer silence is lost data.
MAX_HOLD_S = 0.5
# Samples kept per station beyond the longest weld (s): the summary of a weld that just
# ended needs all of its samples.
KEEP_MARGIN_S = 30.0
# Samples kept per second of that span, at most: power sources report about ten a second, so
# five times that is headroom, and a flood (a gateway replaying its buffer, a probe) costs a
# bounded list instead of memory that grows with the message rate. The oldest go first,
# counted in ``over_cap``.
MAX_SAMPLES_PER_S = 50
# Trim in batches: list deletes from the front are O(n).
TRIM_BATCH = 256


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One reading of the power source at sample ``index`` of the station's clock. Optional
    readings the source does not report are NaN."""

    index: int
    current_a: float
    voltage_v: float = math.nan
    wire_feed_m_min: float = math.nan  # wire feed speed
    wire_consumed_m: float = math.nan  # the source's wire counter (cumulative)

    @property
    def usable(self) -> bool:
        """A finite current; optional values may be NaN but never infinite."""
        optional = (self.voltage_v, self.wire_feed_m_min, self.wire_consumed_m)
        return math.isfinite(self.current_a) and not any(math.isinf(v) for v in optional)


@dataclass(frozen=True, slots=True)
class Dropouts:
    """Interruptions of the arc inside one weld."""

    count: int = 0
    longest_s: float = 0.0
    total_s: float = 0.0

    @classmethod
    def of(cls, lengths_s: list[float]) -> Dropouts:
        """From the dropouts' lengths (s)."""
        if not lengths_s:
            return cls()
        return cls(len(lengths_s), max(lengths_s), math.fsum(lengths_s))


@dataclass(frozen=True, slots=True)
class ProcessSummary:
    """One weld's process record (None where the source did not report the quantity)."""

    samples: int
    arc_s: float
    current_mean_a: float | None
    current_std_a: float | None
    voltage_mean_v: float | None
    voltage_std_v: float | None
    energy_kj: float | None
    wire_consumed_m: float | None
    dropouts: Dropouts


class ProcessTrack:
    """One station's process samples in time order, trimmed to what a weld may still need.

    ``push`` skips (and counts in ``bad_samples``) a sample that is not usable or not after
    the previous one: the track is never reordered, so a late duplicate cannot rewrite a weld
    already summarised. It holds at most MAX_SAMPLES_PER_S per second of its span; beyond
    that the oldest are dropped and counted in ``over_cap``."""

    def __init__(self, sample_rate: int, keep_s: float) -> None:
        self.sample_rate = sample_rate
        self._keep = round((keep_s + KEEP_MARGIN_S) * sample_rate)
        self.max_samples = round((keep_s + KEEP_MARGIN_S) * MAX_SAMPLES_PER_S)
        self._samples: list[ProcessSample] = []
        self._indices: list[int] = []
        self.bad_samples = 0
        self.received = 0
        self.over_cap = 0  # dropped while still inside the span: more than the cap held

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def latest_index(self) -> int | None:
        """Index of the newest sample held, None when empty."""
        return self._indices[-1] if self._indices else None

    def push(self, sample: ProcessSample) -> bool:
        """Add one sample; False (and counted) when it is skipped."""
        self.received += 1
        if not sample.usable or (self._indices and sample.index <= self._indices[-1]):
            self.bad_samples += 1
            return False
        self._samples.append(sample)
        self._indices.append(sample.index)
        expired = bisect_left(self._indices, sample.index - self._keep)
        drop = max(expired, len(self._indices) - self.max_samples)
        if drop > TRIM_BATCH:
            self.over_cap += drop - expired
            del self._samples[:drop]
            del self._indices[:drop]
        return True

    def between(self, start: int, end: int) -> list[ProcessSample]:
        """The samples with ``start <= index < end``, in order."""
        return self._samples[bisect_left(self._indices, start) : bisect_left(self._indices, end)]

    def before(self, index: int) -> ProcessSample | None:
        """The newest sample before ``index`` (what holds at ``index``), if any."""
        k = bisect_left(self._indices, index)
        return self._samples[k - 1] if k else None


def arc_spans(
    times: np.ndarray,
    currents: np.ndarray,
    threshold_a: float = ARC_CURRENT_A,
    bridge: float = ARC_BRIDGE_S,
) -> list[tuple[float, float]]:
    """Arc-on spans (first, last) of readings at ``times`` (any unit; ``bridge`` in the
    same): first to last reading above ``threshold_a``, runs separated by at most
    ``bridge`` of off-readings joined into one. The one arc rule of the sensor log's ground
    truth (`deploy.sensorlog.arc_intervals`) and the live self-check
    (`deploy.segment.boundary_check`)."""
    t = np.asarray(times, dtype=np.float64)[np.asarray(currents) > threshold_a]
    if t.size == 0:
        return []
    # A new span starts where the gap between consecutive on-readings exceeds the bridge.
    breaks = np.flatnonzero(np.diff(t) > bridge)
    starts = np.concatenate(([t[0]], t[breaks + 1]))
    ends = np.concatenate((t[breaks], [t[-1]]))
    return [(float(a), float(b)) for a, b in zip(starts, ends, strict=True)]


def _hold(samples: list[ProcessSample], end: int, rate: int) -> np.ndarray:
    """Seconds each sample stands for (until the next one, at most MAX_HOLD_S, not past end)."""
    idx = np.array([s.index for s in samples] + [end], dtype=np.float64)
    return np.minimum(np.diff(idx) / rate, MAX_HOLD_S).clip(min=0.0)


def dropout_threshold(currents: np.ndarray, threshold_a: float = ARC_CURRENT_A) -> float:
    """Current (A) under which a weld's arc counts as interrupted: DROPOUT_FRACTION of its
    median arc current, at least ``threshold_a``."""
    arc = currents[currents > threshold_a]
    if arc.size == 0:
        return threshold_a
    return max(threshold_a, DROPOUT_FRACTION * float(np.median(arc)))


def current_dropouts(
    samples: list[ProcessSample], rate: int, threshold_a: float | None = None
) -> list[tuple[int, int]]:
    """(start, end) sample indices of every stretch between the first and last sample above
    the threshold (default ``dropout_threshold`` of the samples) where the current is not
    above it: from the first sample under it to the next one above."""
    out: list[tuple[int, int]] = []
    current = np.array([s.current_a for s in samples])
    limit = dropout_threshold(current) if threshold_a is None else threshold_a
    above = (current > limit).tolist()
    if not any(above):
        return out
    first = above.index(True)
    last = len(above) - 1 - above[::-1].index(True)
    gap_start: int | None = None
    for s, on in zip(samples[first : last + 1], above[first : last + 1], strict=True):
        if not on and gap_start is None:
            gap_start = s.index
        elif on and gap_start is not None:
            out.append((gap_start, s.index))
            gap_start = None
    return out


def summarise(
    samples: list[ProcessSample], end: int, rate: int, threshold_a: float = ARC_CURRENT_A
) -> ProcessSummary | None:
    """The process record of one weld from its samples (in order, all before ``end``, the
    weld's end index); None without samples."""
    if not samples:
        return None
    hold = _hold(samples, end, rate)
    current = np.array([s.current_a for s in samples])
    on = current > threshold_a
    arc_s = float(hold[on].sum())

    def weighted(values: np.ndarray) -> tuple[float | None, float | None]:
        ok = on & np.isfinite(values) & (hold > 0.0)
        if not ok.any():
            return None, None
        mean = float(np.average(values[ok], weights=hold[ok]))
        var = float(np.average((values[ok] - mean) ** 2, weights=hold[ok]))
        return mean, math.sqrt(var)

    voltage = np.array([s.voltage_v for s in samples])
    i_mean, i_std = weighted(current)
    v_mean, v_std = weighted(voltage)
    power_ok = on & np.isfinite(voltage)
    energy = float(np.sum(current[power_ok] * voltage[power_ok] * hold[power_ok])) / 1000.0
    return ProcessSummary(
        samples=len(samples),
        arc_s=arc_s,
        current_mean_a=i_mean,
        current_std_a=i_std,
        voltage_mean_v=v_mean,
        voltage_std_v=v_std,
        energy_kj=energy if power_ok.any() else None,
        wire_consumed_m=_wire(samples, hold),
        dropouts=Dropouts.of(
            [
                (b - a) / rate
                for a, b in current_dropouts(samples, rate, dropout_threshold(current, threshold_a))
            ]
        ),
    )


def _wire(samples: list[ProcessSample], hold: np.ndarray) -> float | None:
    """The wire counter's increase over the weld, else the feed speed integrated over it."""
    counter = [s.wire_consumed_m for s in samples if math.isfinite(s.wire_consumed_m)]
    if len(counter) >= 2:
        return max(0.0, counter[-1] - counter[0])
    feed = np.array([s.wire_feed_m_min for s in samples])
    ok = np.isfinite(feed)
    if not ok.any():
        return None
    return float(np.sum(feed[ok] / 60.0 * hold[ok]))
