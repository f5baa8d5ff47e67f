"""Segmenters built from a mode name, for the modes that need nothing but the audio.

Training and evaluation build the daemon's default segmenter here, so they judge the very
windows the daemon cuts; ``monitor.segment.factory`` adds the modes that need the running
monitor (external triggers, one weld per file) and delegates the pure ones to this module.
"""

from __future__ import annotations

from deploy.segment.gate import GateParams, GateSegmenter
from deploy.segment.protocol import SegmentationError, Segmenter

DEFAULT_MODE = "gate"  # what the daemon runs unless configured otherwise
PURE_MODES = ("gate",)  # modes this module can build: they listen to the audio only


def pure_segmenter(mode: str, sample_rate: int, gate: GateParams | None = None) -> Segmenter:
    """A fresh segmenter of a pure ``mode`` for one station's stream at ``sample_rate`` Hz;
    raises SegmentationError for a mode that needs the monitor."""
    if mode == "gate":
        return GateSegmenter(gate or GateParams(), sample_rate)
    raise SegmentationError(
        f"segmentation mode {mode!r} is not one of the audio-only modes {PURE_MODES}"
    )


def pure_max_weld_s(mode: str, gate: GateParams | None = None) -> float:
    """The longest weld (s) a pure ``mode``'s segmenter lets through before forcing an end."""
    if mode == "gate":
        return (gate or GateParams()).max_weld_s
    raise SegmentationError(
        f"segmentation mode {mode!r} is not one of the audio-only modes {PURE_MODES}"
    )


def default_segmenter(sample_rate: int) -> Segmenter:
    """The daemon's default segmenter (the arc gate at its default settings)."""
    return pure_segmenter(DEFAULT_MODE, sample_rate)
