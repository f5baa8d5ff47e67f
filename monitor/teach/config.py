"""The ``teach_in:`` section: the teach-in rule's target and guards (monitor/teach)."""

from __future__ import annotations

from pydantic import Field, model_validator

from deploy.strict_model import StrictModel
from deploy.teach_rule import (
    DEFAULT_MAX_BELOW_ARTIFACT,
    DEFAULT_MAX_THRESHOLD,
    DEFAULT_TARGET_FALSE_ALARM,
    guards,
)


class TeachInConfig(StrictModel):
    """Teach-in: a station's threshold taught from its own good welds while the daemon runs
    (monitor/teach; docs/operations.md, "Commissioning a cell")."""

    # the share of good welds the taught threshold may flag (the rule's target, 0.01 = 1 %)
    target_false_alarm: float = Field(DEFAULT_TARGET_FALSE_ALARM, gt=0.0, lt=0.5)
    # guards: never below this (null: the artifact's threshold minus `max_below_artifact`)
    min_threshold: float | None = Field(None, ge=0.0, le=1.0)
    max_below_artifact: float = Field(DEFAULT_MAX_BELOW_ARTIFACT, ge=0.0, le=1.0)
    # never above: a blind station
    max_threshold: float = Field(DEFAULT_MAX_THRESHOLD, ge=0.0, le=1.0)
    # drift (monitor/teach/drift.py): the last `drift_welds` welds judged good at a taught
    # station; from `drift_min_welds` on, their median moving more than `drift_share` of the
    # way from the taught reference to the taught threshold raises one `recalibrate` error
    drift_welds: int = Field(20, ge=1, le=10_000)
    drift_min_welds: int = Field(5, ge=1, le=10_000)
    drift_share: float = Field(0.5, gt=0.0, le=100.0)

    @model_validator(mode="after")
    def _ordered(self) -> TeachInConfig:
        if self.min_threshold is not None and self.min_threshold > self.max_threshold:
            raise ValueError("min_threshold must not exceed max_threshold")
        if self.drift_min_welds > self.drift_welds:
            raise ValueError("drift_min_welds must not exceed drift_welds")
        return self

    def guards(self, artifact_threshold: float) -> tuple[float, float]:
        """The (lower, upper) bounds of a taught threshold for this artifact."""
        return guards(
            artifact_threshold, self.min_threshold, self.max_below_artifact, self.max_threshold
        )
