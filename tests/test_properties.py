"""Property-based tests (hypothesis) for the daemon's input edges and its verdict events.

- Config: any mapping (known sections and keys with wild values, unknown keys, nesting)
  either parses or raises `ConfigError` whose every line names a key; valid configs survive
  a YAML round trip unchanged.
- Results: for any window probabilities, the tracker's result validates against the event
  schema and its p_defect is `deploy.pooling.topk_pool` of the judged windows.

Trigger payloads (random bytes and JSON -> parsed or MalformedMessageError) are covered in
tests/test_events.py.
"""

from __future__ import annotations

import json
import math

import jsonschema
import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.pooling import topk_pool
from monitor.config import MAX_STOP_TIMEOUT_S, ConfigError, MonitorConfig, parse_config
from monitor.events import STATION_PATTERN, Source, WeldAlert, WeldResult, parse_event
from monitor.events.schema import mqtt_json_schema
from monitor.pipeline.tracker import ModelInfo, TrackerOptions, WeldTracker

torch.set_num_threads(1)

REQUIRED = {"model": {"path": "model.pt"}, "state_dir": "state"}
# Sections and keys the config knows, so generated dicts hit real validators, not only the
# "extra inputs" rule.
KNOWN_KEYS = {
    "audio": ["device", "samplerate", "channels", "channel_mode", "stations", "block_s"],
    "segmentation": ["mode", "gate", "trigger"],
    "inference": ["max_batch_windows", "queue_windows"],
    "events": ["progress", "window_probs", "outbox_max_events"],
    "mqtt": ["enabled", "host", "port", "topic_prefix", "keepalive_s", "reconnect_min_s"],
    "logging": ["level", "format"],
    "model": ["path", "sha256"],
}
TOP_LEVEL_SCALARS = ["state_dir", "stop_timeout_s"]
SHA = "cd" * 32
CHUNK = 16_000  # samples per window at 16 kHz
SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(mqtt_json_schema())

# Keys as a person could type them in YAML (no control characters: a newline inside a key
# would split its problem line in two).
key_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(key_text, inner),
    max_leaves=6,
)
words = st.sampled_from(["mix", "per_channel", "gate", "trigger", "file", "info", "json", "a"])


@st.composite
def config_dicts(draw: st.DrawFn) -> dict:
    """The required keys (sometimes dropped), known sections with wild values, strays."""
    data: dict = {}
    for key, value in REQUIRED.items():
        if draw(st.booleans()) or draw(st.booleans()):  # present 3 times in 4
            data[key] = value
    for section in draw(st.lists(st.sampled_from(sorted(KNOWN_KEYS)), max_size=4, unique=True)):
        keys = draw(st.lists(st.sampled_from(KNOWN_KEYS[section]), max_size=4, unique=True))
        body = {k: draw(values | words) for k in keys}
        if draw(st.booleans()):
            body[draw(key_text)] = draw(values)
        data[section] = body if draw(st.integers(0, 9)) else draw(values)
    for key in draw(st.lists(st.sampled_from(TOP_LEVEL_SCALARS), max_size=2, unique=True)):
        data[key] = draw(values)
    if draw(st.booleans()):
        data[draw(key_text)] = draw(values)
    return data


@settings(max_examples=300, deadline=None)
@given(config_dicts())
def test_any_config_mapping_parses_or_fails_with_config_error_naming_each_key(
    data: dict,
) -> None:
    try:
        cfg = parse_config(data, "monitor.yaml", check_files=False)
    except ConfigError as exc:
        header, *problems = str(exc).split("\n")  # how parse_config joins its lines
        assert header == "monitor.yaml: invalid configuration:"
        assert problems
        named = [*data, *REQUIRED]
        for line in problems:
            assert any(line.startswith(f"  {key}") for key in named), line
            assert ": " in line, line
    else:
        assert isinstance(cfg, MonitorConfig)


@given(values.filter(lambda v: not isinstance(v, dict)))
def test_a_config_that_is_not_a_mapping_is_refused_with_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        parse_config(value, "monitor.yaml", check_files=False)


station_names = st.from_regex(STATION_PATTERN, fullmatch=True)
positive_s = st.floats(0.01, 5.0, allow_nan=False)


@st.composite
def valid_configs(draw: st.DrawFn) -> dict:
    per_channel = draw(st.booleans())
    channels = draw(st.integers(1, 8))
    n_stations = channels if per_channel else 1
    stations = draw(st.lists(station_names, min_size=n_stations, max_size=n_stations, unique=True))
    retry = sorted([draw(positive_s), draw(positive_s)])
    reconnect = sorted([draw(positive_s), draw(positive_s)])
    return {
        "model": {"path": draw(st.sampled_from(["/m/model.pt", "rel/model.pt"]))},
        "state_dir": "/var/lib/weldmon",
        "audio": {
            "device": draw(st.none() | st.integers(0, 64) | st.sampled_from(["pulse", "USB"])),
            "samplerate": draw(st.none() | st.sampled_from([16_000, 44_100, 48_000])),
            "channels": channels,
            "channel_mode": "per_channel" if per_channel else "mix",
            "stations": draw(st.just(stations) | st.just([])),
            "block_s": draw(st.floats(0.001, 1.0)),
            "retry_min_s": retry[0],
            "retry_max_s": retry[1],
        },
        "segmentation": {"mode": draw(st.sampled_from(["gate", "trigger", "file"]))},
        "inference": {"max_batch_windows": draw(st.integers(1, 1024))},
        "events": {"progress": draw(st.booleans()), "outbox_max_events": draw(st.integers(1))},
        "mqtt": {
            "enabled": draw(st.booleans()),
            "port": draw(st.integers(1, 65535)),
            "client_id": draw(station_names),
            "reconnect_min_s": reconnect[0],
            "reconnect_max_s": reconnect[1],
        },
        "stop_timeout_s": draw(st.floats(0.1, MAX_STOP_TIMEOUT_S)),
    }


@settings(max_examples=100, deadline=None)
@given(valid_configs())
def test_a_valid_config_survives_a_yaml_round_trip_unchanged(data: dict) -> None:
    cfg = parse_config(data, check_files=False)
    dumped = yaml.safe_dump(cfg.model_dump(mode="json"))
    assert parse_config(yaml.safe_load(dumped), check_files=False) == cfg


# --- results from the tracker ----------------------------------------------------------------

probabilities = st.floats(0.0, 1.0, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(
    probs=st.lists(st.none() | probabilities, min_size=0, max_size=40),
    ratio=st.floats(0.01, 1.0),
    threshold=st.floats(0.0, 1.0),
    tail=st.integers(0, CHUNK - 1),
)
def test_a_result_from_any_window_probabilities_validates_and_pools_with_topk_pool(
    probs: list[float | None], ratio: float, threshold: float, tail: int
) -> None:
    model = ModelInfo(SHA, 16_000, CHUNK, eval_pool_ratio=ratio, threshold=threshold)
    options = TrackerOptions(model, "0.1.0", "gate", include_window_probs=True)
    tracker = WeldTracker(options, "cell1", Source(type="device", name="mic"), 8_000, 1.7e9)
    alerts = []
    for i, p in enumerate(probs):
        end = tracker.start_index + (i + 1) * CHUNK
        alerts += [e for e in tracker.add_window(i, p, end, True) if isinstance(e, WeldAlert)]
    result = tracker.result(tracker.start_index + len(probs) * CHUNK + tail, "gate")

    payload = result.to_json()
    assert isinstance(parse_event(payload), WeldResult)
    SCHEMA_VALIDATOR.validate(json.loads(payload))
    judged = [p for p in probs if p is not None]
    assert result.n_windows == len(judged)
    assert result.window_probs == judged
    if judged:
        expected = float(topk_pool(torch.tensor(judged, dtype=torch.float32), ratio))
        # numpy and torch sum the k largest in different orders: a few float32 ulps apart.
        assert result.p_defect == pytest.approx(expected, abs=1e-6)
        # The artifact's own rule: torch.ge(p, threshold) with p float32, i.e. in float32,
        # or the alert rule (2 windows in a row at the threshold) on the same windows.
        run = any(
            all(np.float32(q) >= np.float32(threshold) for q in judged[i : i + 2])
            for i in range(len(judged) - 1)
        )
        assert result.alert_rule_met == run
        assert result.label == int(torch.tensor(result.p_defect) >= threshold or run)
        assert result.window_p_max == max(judged)
        assert result.judged
    else:  # no verdict; too_short only when there was not one whole window
        assert not result.judged
        assert result.degraded_reasons.count("too_short") == int(not probs)
    assert ("inference_failed" in result.degraded_reasons) == (None in probs)
    assert len(alerts) <= 1
    assert all(
        bool(torch.tensor(a.p_defect) >= threshold) and math.isfinite(a.p_defect) for a in alerts
    )
