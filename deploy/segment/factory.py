"""Segmenters built from a mode, for the modes that need nothing but the audio.

Training and evaluation build the daemon's default segmenter here, so they judge the very
windows the daemon cuts; ``monitor.segment.factory`` adds the modes that need the running
monitor (external triggers, one weld per file, the welder's process data) and delegates
these to this module. The default is the crackle segmenter: the leave-one-setup-out bench
(bench/segmentation_loso.py, docs/segmentation.md) picked it over the arc gate.
"""

from __future__ import annotations

from deploy.segment.arc import ArcParams, ArcSegmenter
from deploy.segment.crackle import CrackleSegmenter
from deploy.segment.crackle_params import CrackleParams
from deploy.segment.gate import GateParams, GateSegmenter
from deploy.segment.modes import SegmentationMode
from deploy.segment.protocol import SegmentationError, Segmenter

DEFAULT_MODE = SegmentationMode.CRACKLE  # what the daemon runs unless configured otherwise
# The modes this module builds: they listen to the audio only.
AUDIO_ONLY_MODES = frozenset(
    {SegmentationMode.CRACKLE, SegmentationMode.GATE, SegmentationMode.ARC}
)


def _require_audio_only(mode: SegmentationMode) -> None:
    if mode not in AUDIO_ONLY_MODES:
        raise SegmentationError(
            f"segmentation mode {mode!r} needs the running monitor; audio-only modes: "
            f"{sorted(AUDIO_ONLY_MODES)}"
        )


def audio_only_segmenter(
    mode: SegmentationMode,
    sample_rate: int,
    gate: GateParams | None = None,
    crackle: CrackleParams | None = None,
    arc: ArcParams | None = None,
) -> Segmenter:
    """A fresh segmenter of an audio-only ``mode`` for one station's stream at
    ``sample_rate`` Hz; raises SegmentationError for a mode that needs the monitor (and
    ArcModelError for an arc model that cannot be loaded)."""
    _require_audio_only(mode)
    if mode is SegmentationMode.GATE:
        return GateSegmenter(gate or GateParams(), sample_rate)
    if mode is SegmentationMode.ARC:
        return ArcSegmenter(arc or ArcParams(), sample_rate)
    return CrackleSegmenter(crackle or CrackleParams(), sample_rate)


def audio_only_max_weld_s(
    mode: SegmentationMode,
    gate: GateParams | None = None,
    crackle: CrackleParams | None = None,
    arc: ArcParams | None = None,
) -> float:
    """The longest weld (s) an audio-only ``mode`` lets through before it forces an end."""
    _require_audio_only(mode)
    if mode is SegmentationMode.GATE:
        return (gate or GateParams()).max_weld_s
    if mode is SegmentationMode.ARC:
        return (arc or ArcParams()).max_weld_s
    return (crackle or CrackleParams()).max_weld_s


def default_segmenter(sample_rate: int) -> Segmenter:
    """The daemon's default segmenter (the crackle segmenter at its default settings)."""
    return audio_only_segmenter(DEFAULT_MODE, sample_rate)
