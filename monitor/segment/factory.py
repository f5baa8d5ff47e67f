"""The one place a segmentation mode becomes a segmenter, for the pipeline, replay and daemon.

Pure modes (the arc gate) come from ``deploy.segment.factory``, which training shares; the
modes that need the running monitor are built here: ``trigger`` (start/stop messages from
the robot, ``monitor.segment.triggers.TriggerSegmenter``) and ``file`` (one weld per file,
for replay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from deploy.segment.factory import PURE_MODES, pure_max_weld_s, pure_segmenter
from deploy.segment.gate import GateParams
from deploy.segment.protocol import Segmenter
from monitor.events import EndReason, SegmentationMode
from monitor.segment.triggers import DEFAULT_TRIGGER_MAX_WELD_S, FileSegmenter, TriggerSegmenter


@dataclass(frozen=True)
class SegmenterSpec:
    """Which segmenter each station runs and its settings."""

    mode: SegmentationMode
    gate: GateParams = field(default_factory=GateParams)
    trigger_max_weld_s: float = DEFAULT_TRIGGER_MAX_WELD_S


def new_segmenter(spec: SegmenterSpec, sample_rate: int) -> Segmenter:
    """A fresh segmenter for one station and stream epoch at ``sample_rate`` Hz."""
    if spec.mode == "trigger":
        return TriggerSegmenter(sample_rate, spec.trigger_max_weld_s)
    if spec.mode == "file":
        return FileSegmenter()
    return pure_segmenter(spec.mode, sample_rate, spec.gate)


def max_weld_s(spec: SegmenterSpec) -> float:
    """The longest weld (s) the mode lets through; inf for one weld per file."""
    if spec.mode == "trigger":
        return spec.trigger_max_weld_s
    if spec.mode == "file":
        return math.inf
    return pure_max_weld_s(spec.mode, spec.gate)


def end_reason(mode: SegmentationMode) -> EndReason:
    """The ``end_reason`` of a weld that the mode's segmenter itself ended."""
    if mode == "trigger":
        return "trigger"
    if mode == "file":
        return "file_end"
    assert mode in PURE_MODES
    return "gate"
