"""The trends page's numbers: welds, defects, alerted welds and reviews per station per day
or shift, and the false-alarm rate the reviews give (pure bucketing, a real history file)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.console.records import Review
from monitor.console.store import WeldStore
from monitor.console.trends import period_of, trend_chart, trends
from tests.test_console_parts import T0, result


@pytest.fixture
def utc_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Periods are the host's local time: pin it to UTC for exact boundaries."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_shifts_follow_the_clock_and_a_night_belongs_to_the_day_it_starts(utc_host: None) -> None:
    day = datetime(2026, 3, 2, tzinfo=UTC)
    at = {h: period_of(day + timedelta(hours=h), "shift") for h in (5.9, 6, 13.9, 14, 22, 23.5)}
    assert at == {
        5.9: "2026-03-01 night",
        6: "2026-03-02 early",
        13.9: "2026-03-02 early",
        14: "2026-03-02 late",
        22: "2026-03-02 night",
        23.5: "2026-03-02 night",
    }
    assert period_of(day + timedelta(hours=5.9), "day") == "2026-03-02"


def test_counts_and_the_false_alarm_rate_come_from_the_history(
    utc_host: None, tmp_path: Path
) -> None:
    store = WeldStore(tmp_path / "h.sqlite3")
    welds = [
        (result(start=T0), True),  # defect, alerted
        (result(start=T0 + timedelta(minutes=5)), False),  # defect
        (result(label=0, start=T0 + timedelta(minutes=9)), False),  # good
        (result(start=T0 + timedelta(days=1)), False),  # next day
    ]
    for r, alerted in welds:
        store.add_result("plant1/line3", r, r.ended_at, alerted, 1.0)
    for (r, alerted), verdict in zip(welds[:2], ("good", "defect"), strict=False):
        store.add_review(
            Review(
                weld_id=r.weld_id,
                prefix="plant1/line3",
                station=r.station,
                verdict=verdict,
                label_code="00" if verdict == "good" else "07",
                label_name="x",
                model_label=r.label,
                alerted=alerted,
                reviewer="ana",
                reviewed_at=T0,
                dataset_path=None,
                note=None,
            )
        )
    (station,) = trends(store.trend_rows(T0 - timedelta(days=1)), "day")
    assert station.key == "plant1/line3/cell1"
    first, second = station.buckets
    assert (first.period, second.period) == ("2026-03-02", "2026-03-03")
    assert (first.welds, first.defects, first.alerted, first.reviewed) == (3, 2, 1, 2)
    assert (first.false_alarms, first.false_alarm_rate) == (1, 0.5)
    assert second.false_alarm_rate is None  # nothing reviewed: no rate, not 0 %
    chart = trend_chart(station.buckets)
    assert chart.top == 3 and len(chart.bars) == 2 and len(chart.rate_points) == 1
    assert store.trend_rows(T0 + timedelta(days=2)) == []
