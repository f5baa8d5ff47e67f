"""The inbound MQTT messages: a station's weld triggers, part announcements and the welder's
process data, with their topics and subscription filters.

Part of the one wire schema: `monitor.events` holds the outbound events, the status message
and the part-context types these reuse; `monitor.events.schema` builds the JSON Schema of
both. Payloads are parsed by ``monitor.publish.commands`` and
``monitor.publish.process_messages``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from deploy.strict_model import StrictModel
from monitor.events import (
    CONTEXT_KEY_PATTERN,
    DEFAULT_TOPIC_PREFIX,
    MAX_CONTEXT_KEYS,
    ContextKey,
    ContextText,
    UtcTimestamp,
    _Model,  # the events' base (frozen, no extra fields, no NaN): one wire style
)

# Samples per inbound process message: 10 s at 10 samples/s, a gateway's batch at most.
MAX_PROCESS_SAMPLES = 100


# --- inbound trigger ----------------------------------------------------------------------------


_CONTEXT_SCHEMA: JsonDict = {
    "propertyNames": {"pattern": CONTEXT_KEY_PATTERN},
    "maxProperties": MAX_CONTEXT_KEYS + 1,
}


class _ContextMessage(_Model):
    # Flat on the wire: every key but the message's own fields is part context (otherwise
    # strict, like every StrictModel).
    model_config = ConfigDict(extra="allow", json_schema_extra=_CONTEXT_SCHEMA)
    __pydantic_extra__: dict[ContextKey, ContextText] = Field(init=False)

    @model_validator(mode="after")
    def _bounded(self) -> _ContextMessage:
        if len(self.context_fields()) > MAX_CONTEXT_KEYS:
            raise ValueError(f"more than {MAX_CONTEXT_KEYS} context keys")
        return self

    def context_fields(self) -> dict[str, str]:
        """The part context the message carries (may be empty)."""
        return dict(self.model_extra or {})


class TriggerMessage(_ContextMessage):
    """An external weld start/stop on ``{prefix}/{station}/trigger``: JSON
    ``{"state": "start"|"stop"}`` or the plain words ``start`` / ``stop``. A start may carry
    part context beside ``state`` (``{"state": "start", "part_id": "A-1042", "program": "7",
    "seam": "2", "operator": "jd"}``): string values, at most 16 keys; the weld's start,
    alert and result events carry it as ``context``."""

    state: Literal["start", "stop"]


class PartMessage(_ContextMessage):
    """The next part at a station, on ``{prefix}/{station}/part`` (e.g. a barcode scan): JSON
    ``{"part_id": "A-1042", ...}`` (more context keys allowed, as in a trigger) or the plain
    part id. The station's next weld start carries it (a trigger start's own keys win); a
    later announcement replaces it. Never retained (a retained one is ignored)."""

    part_id: ContextText = Field(min_length=1)

    def context_fields(self) -> dict[str, str]:
        return {"part_id": self.part_id, **super().context_fields()}


def part_topic(station: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The inbound part announcement topic of one station."""
    return f"{prefix}/{station}/part"


def part_subscription(prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The wildcard that matches every station's part topic."""
    return f"{prefix}/+/part"


def trigger_topic(station: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The inbound trigger topic of one station."""
    return f"{prefix}/{station}/trigger"


def trigger_subscription(prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The wildcard that matches every station's trigger topic."""
    return f"{prefix}/+/trigger"


# --- inbound process data ---------------------------------------------------------------------


class ProcessReading(StrictModel):
    """One sample of the welder's process data. Fields the power source does not report are
    left out; fields weldmon does not know are ignored (gateways add their own)."""

    model_config = ConfigDict(extra="ignore")  # otherwise strict, like every StrictModel

    t: UtcTimestamp  # when the power source took the sample
    current_a: float = Field(ge=-2000.0, le=2000.0)  # arc (primary weld) current
    voltage_v: float | None = Field(None, ge=-200.0, le=200.0)  # arc (secondary) voltage
    wire_feed_m_min: float | None = Field(None, ge=0.0, le=100.0)  # wire feed speed
    wire_consumed_m: float | None = Field(None, ge=0.0)  # the source's cumulative wire counter


class ProcessMessage(_Model):
    """A batch of process samples on ``{prefix}/{station}/process`` (one reading on its own
    is accepted too). Each reading is checked alone: a bad one is counted and skipped."""

    samples: list[ProcessReading] = Field(min_length=1, max_length=MAX_PROCESS_SAMPLES)


def process_topic(station: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The inbound process-data topic of one station."""
    return f"{prefix}/{station}/process"


def process_subscription(prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The wildcard that matches every station's process-data topic."""
    return f"{prefix}/+/process"
