"""The one place a segmentation mode is switched on: which segmenter it builds, how long a
weld may last, why a weld it ends ended, and whether the daemon or only replay can run it.

Audio-only modes (the crackle segmenter, the default; the learned arc segmenter; the arc
gate) come from
``deploy.segment.factory``, which training shares; the modes that need the running monitor
are built here: ``current`` (the welder's process data, ``deploy.segment.current``: pushed by
the pipeline from MQTT or, in replay, from the run's sensor log), ``trigger`` (start/stop
messages from the robot, ``monitor.segment.triggers.TriggerSegmenter``) and ``file`` (one
weld per file, for replay). The ``segmentation:`` and ``process:`` config sections are
declared here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import Field, model_validator

from deploy.errors import WeldmonError
from deploy.segment.arc import ArcParams
from deploy.segment.arc_model import ArcModelError, load_arc_model
from deploy.segment.crackle_params import CrackleParams
from deploy.segment.current import CurrentParams, CurrentSegmenter
from deploy.segment.factory import DEFAULT_MODE, audio_only_max_weld_s, audio_only_segmenter
from deploy.segment.gate import GateParams
from deploy.segment.modes import SegmentationMode
from deploy.segment.protocol import Segmenter
from deploy.strict_model import StrictModel
from monitor.events import EndReason
from monitor.segment.triggers import DEFAULT_TRIGGER_MAX_WELD_S, FileSegmenter, TriggerSegmenter


class TriggerConfig(StrictModel):
    """Trigger mode: welds start and stop on MQTT messages."""

    max_weld_s: float = Field(DEFAULT_TRIGGER_MAX_WELD_S, gt=0.0)


class SegmentationConfig(StrictModel):
    """The ``segmentation:`` section: how welds are found in the stream (the arc's crackle,
    the arc gate, the welder's current, an external trigger, or one per file) and each
    mode's settings."""

    mode: SegmentationMode = DEFAULT_MODE
    crackle: CrackleParams = CrackleParams()
    gate: GateParams = GateParams()
    arc: ArcParams = ArcParams()
    current: CurrentParams = CurrentParams()
    trigger: TriggerConfig = TriggerConfig()

    @model_validator(mode="after")
    def _arc_model_loads(self) -> SegmentationConfig:
        # A bad arc model is a config error at startup (exit 2), not a failure per station.
        if self.mode is SegmentationMode.ARC:
            try:
                load_arc_model(self.arc.model)
            except ArcModelError as exc:
                raise ValueError(f"arc.model: {exc}") from exc
        return self


class ProcessConfig(StrictModel):
    """The ``process:`` section: the welder's process data on ``{prefix}/{station}/process``
    (current, voltage, wire), which the ``current`` mode cuts welds by and every result
    summarises when it is there."""

    enabled: bool = True  # subscribe to the process topic (ignored when nothing is published)
    # Added to each sample's time before it is placed on the audio's clock (s): for a power
    # source whose clock runs behind (+) or ahead (-) of this machine's.
    clock_offset_s: float = Field(0.0, ge=-60.0, le=60.0)


@dataclass(frozen=True)
class ModeRules:
    """What the monitor must know about a mode besides its segmenter."""

    end_reason: EndReason  # of a weld the mode's segmenter itself ended
    live: bool  # the daemon can run it (False: replay only)
    replay_as: SegmentationMode  # what replay runs instead (no robot sends triggers to a file)
    triggers: bool  # welds come from MQTT trigger messages (the daemon subscribes to them)
    dropouts: bool  # its segmenter reports the arc's dropouts on each weld's end


_MODES = SegmentationMode
RULES: dict[SegmentationMode, ModeRules] = {
    _MODES.CRACKLE: ModeRules(EndReason.CRACKLE, True, _MODES.CRACKLE, False, True),
    _MODES.GATE: ModeRules(EndReason.GATE, True, _MODES.GATE, False, False),
    _MODES.ARC: ModeRules(EndReason.ARC, True, _MODES.ARC, False, True),
    _MODES.CURRENT: ModeRules(EndReason.CURRENT, True, _MODES.CURRENT, False, True),
    _MODES.TRIGGER: ModeRules(EndReason.TRIGGER, True, _MODES.FILE, True, False),
    _MODES.FILE: ModeRules(EndReason.FILE_END, False, _MODES.FILE, False, False),
}


class ModeError(WeldmonError):
    """The mode cannot run here (e.g. ``file`` in the daemon)."""


def require_live(mode: SegmentationMode) -> None:
    """Raise ModeError unless the daemon can run ``mode``."""
    if not RULES[mode].live:
        live = sorted(m.value for m, rules in RULES.items() if rules.live)
        raise ModeError(f"segmentation.mode: {mode.value!r} is for replay; use one of {live}")


def new_segmenter(cfg: SegmentationConfig, sample_rate: int) -> Segmenter:
    """A fresh segmenter for one station and stream epoch at ``sample_rate`` Hz."""
    if cfg.mode is SegmentationMode.TRIGGER:
        return TriggerSegmenter(sample_rate, cfg.trigger.max_weld_s)
    if cfg.mode is SegmentationMode.FILE:
        return FileSegmenter()
    if cfg.mode is SegmentationMode.CURRENT:
        return CurrentSegmenter(cfg.current, sample_rate)
    return audio_only_segmenter(cfg.mode, sample_rate, cfg.gate, cfg.crackle, cfg.arc)


def max_weld_s(cfg: SegmentationConfig) -> float:
    """The longest weld (s) the mode lets through; inf for one weld per file."""
    if cfg.mode is SegmentationMode.TRIGGER:
        return cfg.trigger.max_weld_s
    if cfg.mode is SegmentationMode.FILE:
        return math.inf
    if cfg.mode is SegmentationMode.CURRENT:
        return cfg.current.max_weld_s
    return audio_only_max_weld_s(cfg.mode, cfg.gate, cfg.crackle, cfg.arc)
