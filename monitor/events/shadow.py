"""The shadow model's verdict: ``shadow_result`` on ``{prefix}/{station}/shadow/result``.

A shadow model (config section ``shadow``) judges the same windows of every weld as the
production model, after it; its verdict carries the same ``weld_id`` as the production
``weld_result`` and the production verdict beside its own, so one message is enough to
compare them. QoS 1, never retained, never through the durable outbox (a shadow verdict may
be lost while the broker is away; a production verdict may not), never an alert.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, model_validator

from monitor.events import (
    QOS_AT_LEAST_ONCE,
    MalformedMessageError,
    NonNegativeSeconds,
    Probability,
    Sha256,
    UtcTimestamp,
    _WeldEventBase,
    first_errors,
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
