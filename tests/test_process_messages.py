"""Inbound process-data payloads: parsed reading by reading, bad ones counted, never fatal."""

from __future__ import annotations

import json

import pytest

from monitor.events import MalformedMessageError
from monitor.publish.process_messages import (
    is_process_topic,
    parse_process,
    station_from_process_topic,
)

T = "2026-12-01T10:00:00.100Z"


def test_a_batch_keeps_its_good_readings_and_counts_the_bad_ones() -> None:
    payload = {
        "samples": [
            {"t": T, "current_a": 171.5, "voltage_v": 24.1, "wire_feed_m_min": 8.0},
            {"t": T, "current_a": float("nan")},  # JSON NaN: not a number weldmon takes
            {"t": "2026-12-01T10:00:00", "current_a": 10.0},  # no time zone
            {"current_a": 10.0},  # no time
            {"t": T, "current_a": 20.0, "voltage_v": -900.0},  # out of range
            {"t": T, "current_a": 3.0, "vendor_field": 1},  # unknown fields are ignored
        ]
    }
    good, bad = parse_process(json.dumps(payload).encode())
    assert bad == 4
    assert [r.current_a for r in good] == [171.5, 3.0]
    assert good[0].voltage_v == 24.1 and good[1].voltage_v is None
    assert good[0].t.tzinfo is not None


def test_one_reading_on_its_own_is_a_payload_too() -> None:
    good, bad = parse_process(json.dumps({"t": T, "current_a": 5.5}).encode())
    assert (len(good), bad) == (1, 0)


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1, 2]", b'{"samples": []}', b'{"samples": 3}', b"x" * 70_000],
    ids=["text", "list", "empty", "not-a-list", "huge"],
)
def test_a_payload_that_is_not_process_data_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        parse_process(payload)


def test_process_topics_name_their_station() -> None:
    assert is_process_topic("weldmon/cell-1/process")
    assert not is_process_topic("weldmon/cell-1/trigger")
    assert not is_process_topic("other/cell-1/process")
    assert station_from_process_topic("weldmon/cell-1/process") == "cell-1"
    with pytest.raises(MalformedMessageError):
        station_from_process_topic("weldmon/bad+name/process")
