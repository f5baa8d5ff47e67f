"""Home Assistant MQTT discovery (optional, off by default): per station a ``binary_sensor``
"defect" and a ``sensor`` "p_defect", both fed by ``{prefix}/{station}/weld/result``.

Pure functions return ``(topic, payload, retain)`` tuples; the daemon publishes them once
connected and again whenever Home Assistant announces itself (``{discovery_prefix}/status``
= ``online``), which is how HA asks integrations to re-send discovery after it restarts.
Availability follows the daemon's retained ``{prefix}/status``: ``online`` is available,
``offline`` (the last will) and ``stopped`` are not.

The payload form is :data:`DISCOVERY_PAYLOAD_SCHEMA` (JSON Schema, also in
``docs/homeassistant.md``); the tests validate every generated payload against it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import field_validator

from deploy.strict_model import StrictModel
from monitor.events import status_topic

DEFAULT_DISCOVERY_PREFIX = "homeassistant"  # HA's default `discovery_prefix`
HA_ONLINE = b"online"  # HA's birth message payload on {discovery_prefix}/status
RETAIN_DISCOVERY = True  # a retained config survives our restart and HA's without a birth
ORIGIN_NAME = "weldmon"
MANUFACTURER = "weldmon"
DEVICE_MODEL = "acoustic weld-defect monitor"
P_DEFECT_PRECISION = 3  # digits HA shows for p_defect (the threshold has three)
# HA's discovery topic levels (node_id, object_id) allow only these characters.
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

Discovery = tuple[str, bytes, bool]  # (topic, payload, retain)

# Jinja templates HA renders against each message's JSON. `label` is 0/1 in weld_result.
DEFECT_VALUE_TEMPLATE = "{{ 'ON' if value_json.label == 1 else 'OFF' }}"
P_DEFECT_VALUE_TEMPLATE = "{{ value_json.p_defect }}"
AVAILABILITY_TEMPLATE = "{{ 'online' if value_json.state == 'online' else 'offline' }}"
ATTRIBUTES_TEMPLATE = (
    "{{ {'weld_id': value_json.weld_id, 'threshold': value_json.threshold,"
    " 'ended_at': value_json.ended_at, 'duration_s': value_json.duration_s,"
    " 'degraded': value_json.degraded, 'clip_path': value_json.clip_path} | tojson }}"
)


class HomeAssistantConfig(StrictModel):
    """The ``homeassistant:`` section. ``discovery_prefix`` must match HA's MQTT setting."""

    enabled: bool = False
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX

    @field_validator("discovery_prefix")
    @classmethod
    def _plain_topic(cls, value: str) -> str:
        if not value or any(c in value for c in "+#\x00") or value.strip("/") != value:
            raise ValueError("must be a plain topic without wildcards or leading/trailing '/'")
        return value

    @property
    def birth_topic(self) -> str:
        """Where HA announces itself; subscribe to it when enabled."""
        return f"{self.discovery_prefix}/status"


def _safe_id(text: str) -> str:
    return _ID_UNSAFE.sub("_", text)


def _device(prefix: str, station: str, daemon_version: str) -> dict[str, Any]:
    return {
        "identifiers": [f"weldmon_{_safe_id(prefix)}_{_safe_id(station)}"],
        "name": f"Weld station {station}",
        "manufacturer": MANUFACTURER,
        "model": DEVICE_MODEL,
        "sw_version": daemon_version,
    }


def _common(prefix: str, station: str, daemon_version: str) -> dict[str, Any]:
    return {
        "state_topic": f"{prefix}/{station}/weld/result",
        "availability": [
            {
                "topic": status_topic(prefix),
                "value_template": AVAILABILITY_TEMPLATE,
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "json_attributes_topic": f"{prefix}/{station}/weld/result",
        "json_attributes_template": ATTRIBUTES_TEMPLATE,
        "device": _device(prefix, station, daemon_version),
        "origin": {"name": ORIGIN_NAME, "sw_version": daemon_version},
    }


def _config_topic(
    settings: HomeAssistantConfig, component: str, prefix: str, station: str, entity: str
) -> str:
    node = f"weldmon_{_safe_id(prefix)}"
    return f"{settings.discovery_prefix}/{component}/{node}/{_safe_id(station)}_{entity}/config"


def _unique_id(prefix: str, station: str, entity: str) -> str:
    return f"weldmon_{_safe_id(prefix)}_{_safe_id(station)}_{entity}"


def defect_config(prefix: str, station: str, daemon_version: str) -> dict[str, Any]:
    """The binary_sensor "defect": ON when the station's last weld was judged defect."""
    return {
        "name": "Defect",
        "unique_id": _unique_id(prefix, station, "defect"),
        "device_class": "problem",
        "value_template": DEFECT_VALUE_TEMPLATE,
        "payload_on": "ON",
        "payload_off": "OFF",
        **_common(prefix, station, daemon_version),
    }


def p_defect_config(prefix: str, station: str, daemon_version: str) -> dict[str, Any]:
    """The sensor "p_defect": the last weld's pooled defect probability (0..1)."""
    return {
        "name": "p_defect",
        "unique_id": _unique_id(prefix, station, "p_defect"),
        "state_class": "measurement",
        "suggested_display_precision": P_DEFECT_PRECISION,
        "icon": "mdi:chart-bell-curve",
        "value_template": P_DEFECT_VALUE_TEMPLATE,
        **_common(prefix, station, daemon_version),
    }


def discovery_messages(
    settings: HomeAssistantConfig, prefix: str, stations: list[str], daemon_version: str
) -> list[Discovery]:
    """Every discovery config to publish (retained) for ``stations``; empty when disabled."""
    if not settings.enabled:
        return []
    out = []
    for station in stations:
        for component, entity, config in (
            ("binary_sensor", "defect", defect_config(prefix, station, daemon_version)),
            ("sensor", "p_defect", p_defect_config(prefix, station, daemon_version)),
        ):
            topic = _config_topic(settings, component, prefix, station, entity)
            payload = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
            out.append((topic, payload, RETAIN_DISCOVERY))
    return out


def removal_messages(
    settings: HomeAssistantConfig, prefix: str, stations: list[str]
) -> list[Discovery]:
    """Empty retained configs that make HA delete a station's entities (station removed)."""
    return [
        (topic, b"", RETAIN_DISCOVERY)
        for topic, _, _ in discovery_messages(
            settings.model_copy(update={"enabled": True}), prefix, stations, "removed"
        )
    ]


def is_homeassistant_birth(settings: HomeAssistantConfig, topic: str, payload: bytes) -> bool:
    """Whether an inbound message is HA announcing itself (re-publish discovery then)."""
    return settings.enabled and topic == settings.birth_topic and payload.strip() == HA_ONLINE


_TOPIC_LEVEL = r"[A-Za-z0-9_-]+"
_MQTT_TOPIC = {"type": "string", "minLength": 1, "pattern": r"^[^+#\x00]+$"}
_TEMPLATE = {"type": "string", "pattern": r"^\{\{.*\}\}$"}

DISCOVERY_TOPIC_PATTERN = (
    rf"^[^+#\x00]+/(binary_sensor|sensor)/{_TOPIC_LEVEL}/{_TOPIC_LEVEL}/config$"
)

# The documented form of every discovery payload (keys from HA's MQTT binary_sensor and
# sensor platforms; additionalProperties false so a typo'd key fails the tests instead of
# being silently ignored by HA).
DISCOVERY_PAYLOAD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "weldmon Home Assistant discovery config",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "name",
        "unique_id",
        "state_topic",
        "value_template",
        "availability",
        "device",
        "origin",
    ],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "unique_id": {"type": "string", "pattern": rf"^{_TOPIC_LEVEL}$"},
        "state_topic": _MQTT_TOPIC,
        "value_template": _TEMPLATE,
        "json_attributes_topic": _MQTT_TOPIC,
        "json_attributes_template": _TEMPLATE,
        "device_class": {"enum": ["problem"]},
        "payload_on": {"const": "ON"},
        "payload_off": {"const": "OFF"},
        "state_class": {"enum": ["measurement"]},
        "suggested_display_precision": {"type": "integer", "minimum": 0},
        "icon": {"type": "string", "pattern": r"^mdi:[a-z0-9-]+$"},
        "availability": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["topic", "payload_available", "payload_not_available"],
                "properties": {
                    "topic": _MQTT_TOPIC,
                    "value_template": _TEMPLATE,
                    "payload_available": {"type": "string"},
                    "payload_not_available": {"type": "string"},
                },
            },
        },
        "device": {
            "type": "object",
            "additionalProperties": False,
            "required": ["identifiers", "name"],
            "properties": {
                "identifiers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "minLength": 1},
                },
                "name": {"type": "string", "minLength": 1},
                "manufacturer": {"type": "string"},
                "model": {"type": "string"},
                "sw_version": {"type": "string"},
            },
        },
        "origin": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "sw_version": {"type": "string"}},
        },
    },
    "allOf": [
        {  # a binary sensor needs its ON/OFF payloads, a sensor its state class
            "if": {"required": ["device_class"]},
            "then": {"required": ["payload_on", "payload_off"]},
            "else": {"required": ["state_class"]},
        }
    ],
}
