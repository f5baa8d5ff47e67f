"""The one place a segmentation mode is switched on: which segmenter it builds, how long a
weld may last, why a weld it ends ended, and whether the daemon or only replay can run it.

Audio-only modes (the arc gate) come from ``deploy.segment.factory``, which training shares;
the modes that need the running monitor are built here: ``trigger`` (start/stop messages
from the robot, ``monitor.segment.triggers.TriggerSegmenter``) and ``file`` (one weld per
file, for replay). The ``segmentation:`` config section is declared here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from deploy.errors import WeldmonError
from deploy.segment.factory import audio_only_max_weld_s, audio_only_segmenter
from deploy.segment.gate import GateParams
from deploy.segment.modes import SegmentationMode
from deploy.segment.protocol import Segmenter
from monitor.events import EndReason
from monitor.segment.triggers import DEFAULT_TRIGGER_MAX_WELD_S, FileSegmenter, TriggerSegmenter


class TriggerConfig(BaseModel):
    """Trigger mode: welds start and stop on MQTT messages."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_weld_s: float = Field(DEFAULT_TRIGGER_MAX_WELD_S, gt=0.0)


class SegmentationConfig(BaseModel):
    """The ``segmentation:`` section: how welds are found in the stream (arc gate, external
    trigger, or one per file) and each mode's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mode: SegmentationMode = SegmentationMode.GATE
    gate: GateParams = GateParams()
    trigger: TriggerConfig = TriggerConfig()


@dataclass(frozen=True)
class ModeRules:
    """What the monitor must know about a mode besides its segmenter."""

    end_reason: EndReason  # of a weld the mode's segmenter itself ended
    live: bool  # the daemon can run it (False: replay only)
    replay_as: SegmentationMode  # what replay runs instead (no robot sends triggers to a file)
    triggers: bool  # welds come from MQTT trigger messages (the daemon subscribes to them)


RULES: dict[SegmentationMode, ModeRules] = {
    SegmentationMode.GATE: ModeRules(EndReason.GATE, True, SegmentationMode.GATE, False),
    SegmentationMode.TRIGGER: ModeRules(EndReason.TRIGGER, True, SegmentationMode.FILE, True),
    SegmentationMode.FILE: ModeRules(EndReason.FILE_END, False, SegmentationMode.FILE, False),
}


class ModeError(WeldmonError):
    """The mode cannot run here (e.g. ``file`` in the daemon)."""


def require_live(mode: SegmentationMode) -> None:
    """Raise ModeError unless the daemon can run ``mode``."""
    if not RULES[mode].live:
        raise ModeError(f"segmentation.mode: {mode.value!r} is for replay; use gate or trigger")


def new_segmenter(cfg: SegmentationConfig, sample_rate: int) -> Segmenter:
    """A fresh segmenter for one station and stream epoch at ``sample_rate`` Hz."""
    if cfg.mode is SegmentationMode.TRIGGER:
        return TriggerSegmenter(sample_rate, cfg.trigger.max_weld_s)
    if cfg.mode is SegmentationMode.FILE:
        return FileSegmenter()
    return audio_only_segmenter(cfg.mode, sample_rate, cfg.gate)


def max_weld_s(cfg: SegmentationConfig) -> float:
    """The longest weld (s) the mode lets through; inf for one weld per file."""
    if cfg.mode is SegmentationMode.TRIGGER:
        return cfg.trigger.max_weld_s
    if cfg.mode is SegmentationMode.FILE:
        return math.inf
    return audio_only_max_weld_s(cfg.mode, cfg.gate)
