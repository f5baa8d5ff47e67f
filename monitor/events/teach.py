"""Teach-in on the wire: the command ``{prefix}/cmd/teach`` (`TeachCommand`, who may send it
is the broker's ACL, as for reload and promote) and its answer ``teach_in`` on
``{prefix}/teach/reply`` (`TeachReply`, QoS 1 through the outbox: an accept is an audit
fact). Every command gets exactly one reply with its ``request_id``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, ValidationError

from deploy.strict_model import StrictModel
from monitor.events import (
    MalformedMessageError,
    Probability,
    StationName,
    UtcTimestamp,
    _EventBase,
    first_errors,
    utc_now,
)
from monitor.events.vocabulary import ThresholdSource

TeachAction = Literal["start", "status", "drop", "accept", "reset"]
TEACH_ACTIONS: tuple[TeachAction, ...] = ("start", "status", "drop", "accept", "reset")
TeachState = Literal["idle", "collecting", "taught"]
MAX_TEACH_COMMAND_BYTES = 2048


class TeachCommand(StrictModel):
    """``{prefix}/cmd/teach``: one action on one station's teach-in."""

    action: TeachAction
    station: StationName
    weld_id: str | None = Field(None, min_length=1, max_length=160)  # drop: the weld to drop
    request_id: str | None = Field(None, min_length=1, max_length=128)
    by: str = Field("unknown", min_length=1, max_length=128)  # the person or tool asking


def teach_command_topic(prefix: str) -> str:
    """``{prefix}/cmd/teach``."""
    return f"{prefix}/cmd/teach"


def teach_reply_topic(prefix: str) -> str:
    """Where every teach command's answer is published."""
    return f"{prefix}/teach/reply"


def parse_teach_command(payload: bytes) -> TeachCommand:
    """Parse a teach command; raises MalformedMessageError."""
    if len(payload) > MAX_TEACH_COMMAND_BYTES:
        raise MalformedMessageError(f"command payload longer than {MAX_TEACH_COMMAND_BYTES} B")
    try:
        data: Any = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessageError(f"not a JSON object: {exc}") from exc
    try:
        return TeachCommand.model_validate(data)
    except ValidationError as exc:
        raise MalformedMessageError(f"bad teach command: {first_errors(exc)}") from exc


class TeachReply(_EventBase):
    """The answer to one teach command, and the station's teach-in state after it."""

    kind: Literal["teach_in"] = "teach_in"
    action: TeachAction
    station: str = Field(min_length=1, max_length=160)  # as asked (may be unknown)
    outcome: Literal["applied", "refused"]
    reason: str | None = Field(None, max_length=2000)  # why it was refused
    warning: str | None = Field(None, max_length=2000)  # e.g. accept below 5 welds: rough
    request_id: str | None = None
    by: str = Field(min_length=1, max_length=128)
    at: UtcTimestamp = Field(default_factory=utc_now)
    state: TeachState | None = None  # null: the station is unknown
    # the running teach-in (collecting): its id, the welds and windows it holds so far
    run_id: str | None = None
    welds: int = Field(0, ge=0)
    windows: int = Field(0, ge=0)
    weld_ids: list[str] = Field(default_factory=list)
    dropped: list[str] = Field(default_factory=list)
    skipped: int = Field(0, ge=0)  # degraded or unjudged welds it left out
    # what judges the station now
    threshold: Probability | None = None
    threshold_source: ThresholdSource | None = None
    artifact_threshold: Probability | None = None
    # the accepted calibration in force (taught), null otherwise
    calibration: dict[str, Any] | None = None


def parse_teach_reply(payload: bytes) -> TeachReply:
    """Parse a ``teach_in`` reply; raises MalformedMessageError."""
    try:
        return TeachReply.model_validate_json(payload)
    except ValidationError as exc:
        raise MalformedMessageError(f"not a teach-in reply: {first_errors(exc)}") from exc
