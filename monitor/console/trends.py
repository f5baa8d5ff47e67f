"""The trends page's numbers and charts: per station, per day or per shift, how many welds,
defects, alerted welds and reviews, and the false-alarm rate the reviews give.

Pure: rows from the history in (`WeldStore.trend_rows`), buckets and chart geometry out; the
SVG is drawn by the template from these numbers, on the server (no front-end toolchain, no
charting library in the browser).

Periods are in the console host's local time zone (the plant's), like every time the console
shows. A shift is named by the day it starts on: the night shift that starts at 22:00 on
Monday and ends on Tuesday belongs to Monday.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Literal

Period = Literal["day", "shift"]
PERIODS: tuple[Period, ...] = ("day", "shift")
# Shift starts, local time: the common three-shift pattern. Early 06-14, late 14-22, night 22-06.
SHIFT_STARTS: tuple[tuple[str, time], ...] = (
    ("early", time(6)),
    ("late", time(14)),
    ("night", time(22)),
)
DEFAULT_DAYS = 14  # how far back the page looks by default
MAX_DAYS = 366
CHART_WIDTH = 720  # px
CHART_HEIGHT = 180
CHART_PAD = 30


@dataclass
class Bucket:
    """One station's welds in one period."""

    period: str  # "2026-03-02" or "2026-03-02 late"
    welds: int = 0
    defects: int = 0
    alerted: int = 0
    reviewed: int = 0
    false_alarms: int = 0  # flagged (defect or alerted) welds reviewed as good
    reviewed_flagged: int = 0

    @property
    def false_alarm_rate(self) -> float | None:
        """False alarms over flagged welds reviewed; None before any was reviewed."""
        return self.false_alarms / self.reviewed_flagged if self.reviewed_flagged else None


@dataclass
class StationTrend:
    """One station's buckets, oldest first."""

    prefix: str
    station: str
    buckets: list[Bucket] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.prefix}/{self.station}"


def period_of(ended_at: datetime, period: Period) -> str:
    """The day (YYYY-MM-DD) or shift (YYYY-MM-DD name) a weld's end falls in, local time."""
    local = ended_at.astimezone()
    if period == "day":
        return local.strftime("%Y-%m-%d")
    name, day = _shift(local)
    return f"{day.strftime('%Y-%m-%d')} {name}"


def _shift(local: datetime) -> tuple[str, datetime]:
    at = local.timetz().replace(tzinfo=None)
    first_name, first_start = SHIFT_STARTS[0]
    if at < first_start:  # after midnight, before the first shift: the previous day's last
        return SHIFT_STARTS[-1][0], local - timedelta(days=1)
    name = first_name
    for shift_name, start in SHIFT_STARTS:
        if at >= start:
            name = shift_name
    return name, local


def trends(
    rows: Iterable[tuple[str, str, str, int, int, str | None]], period: Period
) -> list[StationTrend]:
    """Bucket (prefix, station, ended_at, label, alerted, review verdict) rows per station
    and period; stations sorted, periods oldest first."""
    by_station: dict[tuple[str, str], dict[str, Bucket]] = {}
    for prefix, station, ended_at, label, alerted, verdict in rows:
        key = period_of(datetime.fromisoformat(ended_at), period)
        buckets = by_station.setdefault((prefix, station), {})
        b = buckets.setdefault(key, Bucket(key))
        b.welds += 1
        b.defects += label
        b.alerted += alerted
        if verdict is not None:
            b.reviewed += 1
            if label or alerted:
                b.reviewed_flagged += 1
                b.false_alarms += verdict == "good"
    return [
        StationTrend(p, s, [buckets[k] for k in sorted(buckets)])
        for (p, s), buckets in sorted(by_station.items())
    ]


@dataclass(frozen=True)
class TrendBar:
    x: float
    width: float
    y_welds: float
    h_welds: float
    y_defects: float
    h_defects: float
    y_alerted: float
    h_alerted: float
    bucket: Bucket


@dataclass(frozen=True)
class TrendChart:
    """Grouped bars (welds, defects, alerted) per period and the false-alarm rate as points
    on a 0-100 % scale at the right, as plain numbers for an inline SVG."""

    width: int
    height: int
    pad: int
    top: int  # welds at the top of the scale
    bars: list[TrendBar]
    rate_points: list[tuple[float, float, float]]  # x, y, rate
    labels: list[tuple[float, str]]


def trend_chart(buckets: Sequence[Bucket]) -> TrendChart:
    """The chart of one station's buckets."""
    inner_w = CHART_WIDTH - 2 * CHART_PAD
    inner_h = CHART_HEIGHT - 2 * CHART_PAD
    top = max([b.welds for b in buckets] + [1])
    slot = inner_w / max(len(buckets), 1)
    bars, points, labels = [], [], []
    base = CHART_PAD + inner_h

    def height(n: int) -> float:
        return inner_h * n / top

    for i, b in enumerate(buckets):
        x = CHART_PAD + i * slot
        w = max(slot * 0.8 / 3, 1.0)
        bars.append(
            TrendBar(
                x + slot * 0.1, w,
                base - height(b.welds), height(b.welds),
                base - height(b.defects), height(b.defects),
                base - height(b.alerted), height(b.alerted),
                b,
            )
        )  # fmt: skip
        rate = b.false_alarm_rate
        if rate is not None:
            points.append((x + slot / 2, base - inner_h * rate, rate))
    step = max(1, len(buckets) // 8)
    labels = [
        (CHART_PAD + i * slot + slot / 2, b.period) for i, b in enumerate(buckets) if i % step == 0
    ]
    return TrendChart(CHART_WIDTH, CHART_HEIGHT, CHART_PAD, top, bars, points, labels)
