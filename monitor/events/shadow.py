"""The model's life at a cell on the wire: the shadow model's verdict (``shadow_result`` on
``{prefix}/{station}/shadow/result``), the promote / rollback commands (``{prefix}/cmd/promote``,
``{prefix}/cmd/rollback``) and their outcome (``model_change`` on ``{prefix}/model/change``).

A shadow model (config section ``shadow``) judges the same windows of every weld as the
production model, after it; its verdict carries the same ``weld_id`` as the production
``weld_result`` and the production verdict beside its own, so one message is enough to
compare them. QoS 1, never retained, never through the durable outbox (a shadow verdict may
be lost while the broker is away; a production verdict may not), never an alert.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from deploy.strict_model import StrictModel
from monitor.events import (
    QOS_AT_LEAST_ONCE,
    MalformedMessageError,
    NonNegativeSeconds,
    Probability,
    Sha256,
    UtcTimestamp,
    _EventBase,
    _WeldEventBase,
    first_errors,
    utc_now,
)
from monitor.events.vocabulary import EndReason

SHADOW_QOS = QOS_AT_LEAST_ONCE
SHADOW_RETAINED = False


class ShadowResult(_WeldEventBase):
    """The shadow model's verdict on one weld (QoS 1, not retained). ``model_*`` name the
    shadow artifact, ``production_*`` the production verdict on the same weld."""

    kind: Literal["shadow_result"] = "shadow_result"
    shadow: Literal[True] = True
    started_at: UtcTimestamp
    ended_at: UtcTimestamp
    duration_s: NonNegativeSeconds
    end_reason: EndReason
    label: Literal[0, 1]
    label_name: Literal["good_weld", "defect"]
    judged: bool  # false: not one window was judged by the shadow model
    p_defect: Probability
    threshold: Probability  # the shadow artifact's own threshold
    n_windows: int = Field(ge=0)
    window_p_max: Probability
    # windows of the weld the shadow did not judge: skipped under load, failed or timed out
    windows_skipped: int = Field(ge=0)
    windows_failed: int = Field(ge=0)
    complete: bool  # every window production judged was judged by the shadow too
    production_model_sha256: Sha256
    production_label: Literal[0, 1]
    production_p_defect: Probability
    production_judged: bool
    # both judged and the labels are equal; null when either gave no verdict
    agree: bool | None

    @model_validator(mode="after")
    def _consistent(self) -> ShadowResult:
        expected_name = "defect" if self.label == 1 else "good_weld"
        if self.label_name != expected_name:
            raise ValueError(f"label_name {self.label_name!r} contradicts label {self.label}")
        both = self.judged and self.production_judged
        expected = (self.label == self.production_label) if both else None
        if self.agree != expected:
            raise ValueError(f"agree is {self.agree}, the labels say {expected}")
        if self.complete != (self.windows_skipped == 0 and self.windows_failed == 0):
            raise ValueError("complete must be true exactly when no window was skipped or failed")
        return self


def shadow_topic(prefix: str, station: str) -> str:
    """Where a station's shadow verdicts are published."""
    return f"{prefix}/{station}/shadow/result"


def parse_shadow_result(payload: bytes) -> ShadowResult:
    """Parse one ``shadow_result`` payload; raises MalformedMessageError."""
    try:
        return ShadowResult.model_validate_json(payload)
    except ValidationError as exc:
        raise MalformedMessageError(f"not a shadow result: {first_errors(exc)}") from exc


# --- promote and roll back ---------------------------------------------------------------------

ModelAction = Literal["promote", "rollback"]
MODEL_ACTIONS: tuple[ModelAction, ...] = ("promote", "rollback")
MAX_MODEL_COMMAND_BYTES = 8192  # a command is a small JSON object (figures included)
MAX_FIGURES = 32  # comparison figures a command may carry into the audit line


class ModelCommand(StrictModel):
    """``{prefix}/cmd/promote`` or ``{prefix}/cmd/rollback``: who asks, and optionally which
    candidate they mean (a promote is refused when the shadow model in service is another)
    and the comparison figures they decided on (kept in the audit line and the event)."""

    request_id: str | None = Field(None, min_length=1, max_length=128)
    by: str = Field("unknown", min_length=1, max_length=128)  # the person or tool asking
    expect_sha256: Sha256 | None = None
    figures: dict[str, float | int | str | None] = Field(
        default_factory=dict, max_length=MAX_FIGURES
    )


def parse_model_command(payload: bytes) -> ModelCommand:
    """Parse a promote / rollback command (empty: all defaults); raises MalformedMessageError."""
    if len(payload) > MAX_MODEL_COMMAND_BYTES:
        raise MalformedMessageError(f"command payload longer than {MAX_MODEL_COMMAND_BYTES} B")
    text = payload.strip()
    if not text:
        return ModelCommand()
    try:
        data: Any = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessageError(f"not a JSON object: {exc}") from exc
    try:
        return ModelCommand.model_validate(data)
    except ValidationError as exc:
        raise MalformedMessageError(f"bad model command: {first_errors(exc)}") from exc


def model_command_topic(prefix: str, action: ModelAction) -> str:
    """``{prefix}/cmd/promote`` or ``{prefix}/cmd/rollback``."""
    return f"{prefix}/cmd/{action}"


class ModelChange(_EventBase):
    """The outcome of a promote or rollback on ``{prefix}/model/change`` (QoS 1, through the
    outbox). ``model_sha256`` names the production model after it; a refused change names
    the one still in service and says why."""

    kind: Literal["model_change"] = "model_change"
    action: Literal["promote", "rollback"]
    outcome: Literal["applied", "refused"]
    reason: str | None = Field(None, max_length=2000)  # why it was refused
    request_id: str | None = None
    by: str = Field(min_length=1, max_length=128)
    at: UtcTimestamp = Field(default_factory=utc_now)
    sha256_before: Sha256
    sha256_after: Sha256
    path_after: str | None = None  # the production artifact's file after the change
    shadow_sha256_after: Sha256 | None = None
    # the daemon's own running comparison of the shadow against production, and the figures
    # the command carried (the console's, against the reviews)
    figures: dict[str, float | int | str | None] = Field(default_factory=dict)


def model_change_topic(prefix: str) -> str:
    """Where promote / rollback outcomes are published."""
    return f"{prefix}/model/change"


def parse_model_change(payload: bytes) -> ModelChange:
    """Parse a ``model_change`` payload; raises MalformedMessageError."""
    try:
        return ModelChange.model_validate_json(payload)
    except ValidationError as exc:
        raise MalformedMessageError(f"not a model change: {first_errors(exc)}") from exc
