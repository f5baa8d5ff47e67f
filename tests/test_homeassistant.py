"""Home Assistant discovery: payloads match their documented form, templates render against
real weldmon messages, birth detection, removal, settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from monitor.events import StatusMessage, utc_now
from monitor.publish.homeassistant import (
    DISCOVERY_PAYLOAD_SCHEMA,
    DISCOVERY_TOPIC_PATTERN,
    HomeAssistantSettings,
    discovery_messages,
    is_homeassistant_birth,
    removal_messages,
)
from tests.test_clips import make_result

ON = HomeAssistantSettings(enabled=True)
STATIONS = ["cell1", "cell.2"]
VALIDATOR = Draft202012Validator(DISCOVERY_PAYLOAD_SCHEMA)


def configs(prefix: str = "weldmon") -> list[tuple[str, dict, bool]]:
    return [
        (topic, json.loads(payload), retain)
        for topic, payload, retain in discovery_messages(ON, prefix, STATIONS, "0.1.0")
    ]


def render(template: str, message: bytes) -> str:
    # Home Assistant renders value templates with Jinja2, the parsed payload as value_json.
    return jinja2.Environment().from_string(template).render(value_json=json.loads(message))


def test_the_documented_schema_is_itself_valid_json_schema():
    Draft202012Validator.check_schema(DISCOVERY_PAYLOAD_SCHEMA)


def test_every_discovery_payload_validates_against_the_documented_form():
    found = configs()
    assert len(found) == 2 * len(STATIONS)
    for topic, config, retain in found:
        errors = [e.message for e in VALIDATOR.iter_errors(config)]
        assert errors == [], topic
        assert re.fullmatch(DISCOVERY_TOPIC_PATTERN, topic), topic
        assert retain


def test_the_documented_form_rejects_a_misspelt_key():
    _, config, _ = configs()[0]
    config["state_topc"] = config.pop("state_topic")
    assert not VALIDATOR.is_valid(config)


def test_discovery_is_off_by_default():
    assert discovery_messages(HomeAssistantSettings(), "weldmon", STATIONS, "0.1.0") == []


def test_each_station_gets_a_defect_binary_sensor_and_a_p_defect_sensor_on_its_result_topic():
    by_topic = {topic: config for topic, config, _ in configs("plant/a")}
    assert set(by_topic) == {
        "homeassistant/binary_sensor/weldmon_plant_a/cell1_defect/config",
        "homeassistant/sensor/weldmon_plant_a/cell1_p_defect/config",
        "homeassistant/binary_sensor/weldmon_plant_a/cell_2_defect/config",
        "homeassistant/sensor/weldmon_plant_a/cell_2_p_defect/config",
    }
    defect = by_topic["homeassistant/binary_sensor/weldmon_plant_a/cell_2_defect/config"]
    assert defect["state_topic"] == "plant/a/cell.2/weld/result"
    assert defect["availability"][0]["topic"] == "plant/a/status"


def test_unique_ids_differ_across_stations_and_entities_and_devices_per_station():
    found = configs()
    assert len({c["unique_id"] for _, c, _ in found}) == len(found)
    devices = {tuple(c["device"]["identifiers"]) for _, c, _ in found}
    assert len(devices) == len(STATIONS)


@pytest.mark.parametrize(("label", "expected"), [(1, "ON"), (0, "OFF")])
def test_defect_template_renders_on_for_a_defect_result_and_off_for_a_good_one(
    label: int, expected: str
):
    config = next(c for t, c, _ in configs() if "binary_sensor" in t)
    assert render(config["value_template"], make_result(label=label).to_json()) == expected


def test_p_defect_template_renders_the_results_p_defect():
    config = next(c for t, c, _ in configs() if "/sensor/" in t)
    result = make_result(label=1)
    assert float(render(config["value_template"], result.to_json())) == result.p_defect


def test_attributes_template_renders_a_json_object_with_the_weld_id():
    config = next(c for t, c, _ in configs() if "/sensor/" in t)
    result = make_result(label=1)
    attributes = json.loads(render(config["json_attributes_template"], result.to_json()))
    assert attributes["weld_id"] == result.weld_id


@pytest.mark.parametrize(
    ("state", "availability"),
    [("online", "online"), ("offline", "offline"), ("stopped", "offline")],
)
def test_availability_follows_the_daemon_status(state: str, availability: str):
    _, config, _ = configs()[0]
    status = StatusMessage(
        state=state, at=utc_now(), version="0.1.0", model_sha256=None, client_id="weldmon-x"
    )
    rendered = render(config["availability"][0]["value_template"], status.to_json())
    assert rendered == availability


@pytest.mark.parametrize(
    ("settings", "topic", "payload", "expected"),
    [
        (ON, "homeassistant/status", b"online", True),
        (ON, "homeassistant/status", b"offline", False),
        (ON, "weldmon/status", b"online", False),
        (HomeAssistantSettings(), "homeassistant/status", b"online", False),
        (HomeAssistantSettings(enabled=True, discovery_prefix="ha"), "ha/status", b"online", True),
    ],
)
def test_discovery_is_republished_only_when_home_assistant_comes_online(
    settings: HomeAssistantSettings, topic: str, payload: bytes, expected: bool
):
    assert is_homeassistant_birth(settings, topic, payload) is expected


def test_removal_sends_empty_retained_configs_on_the_discovery_topics():
    removal = removal_messages(HomeAssistantSettings(), "weldmon", STATIONS)
    assert [t for t, _, _ in removal] == [t for t, _, _ in configs()]
    assert all(payload == b"" and retain for _, payload, retain in removal)


@pytest.mark.parametrize("prefix", ["ha/#", "/ha", "", "ha/"])
def test_settings_reject_a_discovery_prefix_that_is_not_a_plain_topic(prefix: str):
    with pytest.raises(ValidationError, match="discovery_prefix"):
        HomeAssistantSettings(discovery_prefix=prefix)


def test_committed_schema_file_matches_the_module():
    committed = Path(__file__).resolve().parents[1] / "docs" / "homeassistant.schema.json"
    assert json.loads(committed.read_text()) == DISCOVERY_PAYLOAD_SCHEMA
