"""The MQTT event schema: round trips, validation, topics/QoS/retain, the trigger parser, and
the committed JSON Schema and doc examples staying in step with the models."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from deploy.segment.modes import SegmentationMode
from monitor.events import (
    EVENTS_RETAINED,
    DegradedReason,
    EndReason,
    ErrorCode,
    ErrorEvent,
    Event,
    MalformedMessageError,
    Source,
    WeldAlert,
    WeldProgress,
    WeldResult,
    WeldStart,
    format_utc,
    new_weld_id,
    parse_event,
    parse_status,
    qos_for,
    status_payload_factory,
    topic_for,
)
from monitor.events.schema import mqtt_json_schema, mqtt_json_schema_text
from monitor.events.shadow import parse_model_change, parse_shadow_result
from monitor.events.teach import parse_teach_reply
from monitor.publish.commands import parse_part, parse_trigger, station_from_trigger_topic
from monitor.publish.process_messages import parse_process

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO_ROOT / "docs" / "mqtt.schema.json"
MQTT_DOC = REPO_ROOT / "docs" / "mqtt.md"
SHA = "ab" * 32

# --- strategies -----------------------------------------------------------------------------

probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
seconds = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
stations = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
texts = st.text(min_size=1, max_size=40)
common = {
    "daemon_version": st.from_regex(r"[0-9]\.[0-9]{1,2}\.[0-9]", fullmatch=True),
    "model_sha256": st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
}
weld_common = {
    **common,
    "station": stations,
    "weld_id": texts,
    "source": st.builds(Source, type=st.sampled_from(["device", "file"]), name=texts),
}

starts = st.builds(
    WeldStart,
    **weld_common,
    started_at=timestamps,
    segmentation=st.sampled_from(["gate", "trigger", "file"]),
    threshold=probabilities,
)
progresses = st.builds(
    WeldProgress,
    **weld_common,
    window_index=st.integers(0, 10_000),
    window_p_defect=probabilities,
    p_defect=probabilities,
    n_windows=st.integers(1, 10_000),
    threshold=probabilities,
    elapsed_s=seconds,
)
alerts = st.builds(
    WeldAlert,
    **weld_common,
    p_defect=probabilities,
    threshold=probabilities,
    n_windows=st.integers(1, 10_000),
    started_at=timestamps,
    at=timestamps,
)


@st.composite
def results(draw: st.DrawFn) -> WeldResult:
    label = draw(st.sampled_from([0, 1]))
    started = draw(timestamps)
    duration = draw(st.floats(min_value=0.0, max_value=3600.0))
    probs = draw(st.one_of(st.none(), st.lists(probabilities, max_size=20)))
    reasons = draw(st.lists(st.sampled_from(DegradedReason), unique=True))
    return WeldResult(
        **{k: draw(v) for k, v in weld_common.items()},
        started_at=started,
        ended_at=started + timedelta(seconds=duration),
        duration_s=duration,
        label=label,
        label_name="defect" if label else "good_weld",
        p_defect=draw(probabilities),
        threshold=draw(probabilities),
        n_windows=len(probs) if probs is not None else draw(st.integers(0, 10_000)),
        window_p_max=draw(probabilities),
        window_probs=probs,
        degraded=bool(reasons),
        degraded_reasons=reasons,
        dropped_frames=draw(st.integers(0, 10**9)),
        end_reason=draw(
            st.sampled_from(
                ["gate", "trigger", "file_end", "device_lost", "shutdown", "max_length"]
            )
        ),
        clip_path=draw(st.one_of(st.none(), texts)),
    )


errors = st.builds(
    ErrorEvent,
    **common,
    code=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    message=texts,
    station=st.one_of(st.none(), stations),
)
events = st.one_of(starts, progresses, alerts, results(), errors)


def a_result(**overrides: Any) -> dict[str, Any]:
    t = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "daemon_version": "0.1.0",
        "model_sha256": SHA,
        "station": "cell1",
        "weld_id": "cell1-x",
        "source": {"type": "device", "name": "hw:1"},
        "started_at": t,
        "ended_at": t + timedelta(seconds=4),
        "duration_s": 4.0,
        "label": 1,
        "label_name": "defect",
        "p_defect": 0.9,
        "threshold": 0.7,
        "n_windows": 4,
        "window_p_max": 0.95,
        "degraded": False,
        "dropped_frames": 0,
        "end_reason": "gate",
    }
    values.update(overrides)
    return values


# --- round trips ------------------------------------------------------------------------------


@given(events)
def test_any_valid_event_round_trips_through_json(event: Event) -> None:
    assert parse_event(event.to_json()) == event


SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(mqtt_json_schema())


@settings(max_examples=50, deadline=None)  # schema validation is slow-ish; 50 cover each kind
@given(events)
def test_serialised_events_validate_against_the_json_schema(event: Event) -> None:
    SCHEMA_VALIDATOR.validate(json.loads(event.to_json()))


def test_to_json_is_compact_and_leads_with_kind() -> None:
    payload = WeldResult(**a_result()).to_json()
    assert b" " not in payload.replace(b'"hw:1"', b"")
    assert payload.startswith(b'{"kind":"weld_result","event_id":"')


def test_timestamps_are_utc_with_milliseconds_and_z() -> None:
    local = datetime(2026, 3, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_utc(local) == "2026-03-01T12:00:00.123Z"
    data = json.loads(WeldResult(**a_result(started_at=local, ended_at=local)).to_json())
    assert data["started_at"] == "2026-03-01T12:00:00.123Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["emitted_at"])


def test_each_event_gets_a_fresh_uuid4_event_id() -> None:
    first, second = WeldResult(**a_result()), WeldResult(**a_result())
    assert first.event_id != second.event_id
    assert first.event_id[14] == "4"


def test_weld_ids_name_the_station_and_start_time_and_are_unique() -> None:
    t = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
    ids = {new_weld_id("cell1", t) for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"cell1-20260301T120000\.250Z-[0-9a-f]{8}", i) for i in ids)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label_name": "good_weld"}, "contradicts label"),
        ({"degraded": True}, "degraded must be true exactly"),
        ({"degraded_reasons": ["too_short"]}, "degraded must be true exactly"),
        ({"p_defect": float("nan")}, "p_defect"),
        ({"p_defect": 1.5}, "p_defect"),
        ({"window_probs": [0.1]}, "window_probs has 1 entries"),
        ({"station": "cell/1"}, "station"),
        ({"model_sha256": "xyz"}, "model_sha256"),
        ({"end_reason": "power_cut"}, "end_reason"),
        ({"started_at": datetime(2026, 3, 1, 12, 0)}, "timezone"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_results_are_rejected_naming_the_problem(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        WeldResult(**a_result(**overrides))


def test_parse_event_rejects_other_payloads_with_malformed_message_error() -> None:
    with pytest.raises(MalformedMessageError, match="kind"):
        parse_event(b'{"kind": "weld_party"}')
    with pytest.raises(MalformedMessageError):
        parse_event(b"\xff\xfe not json")


# --- topics, QoS, retain ----------------------------------------------------------------------


def test_topics_qos_and_retain_follow_the_documented_table() -> None:
    result = WeldResult(**a_result())
    f = {k: v for k, v in a_result().items() if k in ("daemon_version", "model_sha256")}
    w = {**f, "station": "cell1", "weld_id": "w", "source": {"type": "file", "name": "a"}}
    t = datetime(2026, 3, 1, tzinfo=UTC)
    table = [
        (WeldStart(**w, started_at=t, segmentation="gate", threshold=0.5), "p/cell1/weld/start", 1),
        (
            WeldProgress(
                **w,
                window_index=0,
                window_p_defect=0.1,
                p_defect=0.1,
                n_windows=1,
                threshold=0.5,
                elapsed_s=1.0,
            ),
            "p/cell1/weld/progress",
            0,
        ),
        (
            WeldAlert(**w, p_defect=0.6, threshold=0.5, n_windows=2, started_at=t, at=t),
            "p/cell1/weld/alert",
            1,
        ),
        (result, "p/cell1/weld/result", 1),
        (ErrorEvent(**f, code="model_reload_failed", message="bad file"), "p/error", 1),
    ]
    assert [(topic_for(e, "p"), qos_for(e), EVENTS_RETAINED) for e, _, _ in table] == [
        (topic, qos, False) for _, topic, qos in table
    ]


def test_status_payloads_carry_state_time_version_model_and_client() -> None:
    status = parse_status(status_payload_factory("0.1.0", SHA, "weldmon-box")("offline"))
    assert (status.state, status.version, status.model_sha256, status.client_id) == (
        "offline",
        "0.1.0",
        SHA,
        "weldmon-box",
    )


def test_status_payload_rejects_an_unknown_state() -> None:
    with pytest.raises(ValidationError, match="state"):
        status_payload_factory("0.1.0", SHA, "c")("sleeping")


# --- trigger ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "state"),
    [
        (b'{"state": "start"}', "start"),
        (b'{"state":"stop"}', "stop"),
        (b"start", "start"),
        (b" STOP\n", "stop"),
        (b'"start"', "start"),
    ],
)
def test_trigger_accepts_json_and_plain_words(payload: bytes, state: str) -> None:
    assert parse_trigger(payload).state == state


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"go",
        b'{"state": "pause"}',
        b'{"state": "start", "bad key": "x"}',
        b'{"state": "start", "part_id": {"nested": 1}}',
        b"[1, 2]",
        b"\xff\xfe",
        b"[" * 5000,
        b"start" * 1000,
        b'{"state": "start", "x": "' + b"y" * 5000 + b'"}',
        b"null",
    ],
)
def test_trigger_rejects_anything_else_with_malformed_message_error(payload: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        parse_trigger(payload)


@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_trigger_parser(payload: bytes) -> None:
    with contextlib.suppress(MalformedMessageError):
        assert parse_trigger(payload).state in ("start", "stop")


@given(
    st.recursive(
        st.none() | st.booleans() | st.text(max_size=8),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
        max_leaves=20,
    )
)
def test_random_json_never_crashes_the_trigger_parser(value: object) -> None:
    with contextlib.suppress(MalformedMessageError):
        assert parse_trigger(json.dumps(value).encode()).state in ("start", "stop")


def test_trigger_topic_names_the_station() -> None:
    assert station_from_trigger_topic("weldmon/cell-2/trigger", "weldmon") == "cell-2"


@pytest.mark.parametrize(
    "topic", ["weldmon/cell/other", "other/cell/trigger", "weldmon/a/b/trigger", "weldmon//trigger"]
)
def test_other_topics_are_not_trigger_topics(topic: str) -> None:
    with pytest.raises(MalformedMessageError):
        station_from_trigger_topic(topic, "weldmon")


# --- committed artefacts stay in step with the models -----------------------------------------


def test_committed_json_schema_matches_the_models() -> None:
    assert SCHEMA_FILE.read_text() == mqtt_json_schema_text(), (
        "docs/mqtt.schema.json is stale: run `.venv/bin/python -m monitor.events > "
        "docs/mqtt.schema.json`"
    )


def test_schema_is_a_one_of_over_every_event_kind() -> None:
    schema = mqtt_json_schema()
    assert set(schema["discriminator"]["mapping"]) == {
        "weld_start",
        "weld_progress",
        "weld_alert",
        "weld_result",
        "error",
    }
    assert len(schema["oneOf"]) == 5


LIFECYCLE_PARSERS = {
    "shadow_result": parse_shadow_result,
    "model_change": parse_model_change,
    "teach_in": parse_teach_reply,
}


def test_every_json_example_in_the_mqtt_doc_is_a_valid_message() -> None:
    blocks = re.findall(r"```json\n(.*?)```", MQTT_DOC.read_text(), flags=re.DOTALL)
    kinds = set()
    for block in blocks:
        data = json.loads(block)
        if data.get("kind") in LIFECYCLE_PARSERS:  # shadow and promote: not weld events
            kinds.add(LIFECYCLE_PARSERS[data["kind"]](json.dumps(data).encode()).kind)
        elif "kind" in data:
            kinds.add(parse_event(json.dumps(data).encode()).kind)
        elif "state" in data and "client_id" in data:
            parse_status(json.dumps(data).encode())
        elif "samples" in data or "current_a" in data:
            readings, bad = parse_process(json.dumps(data).encode())
            assert readings and bad == 0, block
        elif "state" not in data:
            parse_part(json.dumps(data).encode())
        else:
            parse_trigger(json.dumps(data).encode())
    assert kinds == {"weld_start", "weld_progress", "weld_alert", "weld_result", "error"} | set(
        LIFECYCLE_PARSERS
    )


@pytest.mark.parametrize("vocabulary", [SegmentationMode, EndReason, DegradedReason, ErrorCode])
def test_mqtt_doc_and_schema_list_every_word_of_each_vocabulary(vocabulary) -> None:
    doc = MQTT_DOC.read_text()
    listed = {word for word in vocabulary if f"| `{word.value}` |" in doc}
    assert listed == set(vocabulary), f"docs/mqtt.md lacks {set(vocabulary) - listed}"
    in_schema = mqtt_json_schema()["$defs"][vocabulary.__name__]["enum"]
    assert in_schema == [word.value for word in vocabulary]
