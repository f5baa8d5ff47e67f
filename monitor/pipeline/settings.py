"""What a pipeline is built from and what it counts: `PipelineSettings` (from the config, or
replay's command line) and `PipelineCounters` (the monotonic totals `Pipeline.counts` reports).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from deploy.segment.crackle_params import CrackleParams
from deploy.segment.current import CurrentParams
from deploy.segment.gate import GateParams
from deploy.segment.modes import SegmentationMode
from monitor.audio.config import ChannelMode
from monitor.segment.factory import SegmentationConfig, TriggerConfig
from monitor.segment.triggers import DEFAULT_TRIGGER_MAX_WELD_S

DEFAULT_MAX_IN_FLIGHT = 255  # windows awaiting inference before feed() waits


@dataclass(frozen=True)
class PipelineSettings:
    """How blocks become welds (from the config, or replay's command line)."""

    stations: list[str]
    channel_mode: ChannelMode
    segmentation: SegmentationMode
    gate: GateParams = field(default_factory=GateParams)
    trigger_max_weld_s: float = DEFAULT_TRIGGER_MAX_WELD_S
    progress: bool = True
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    crackle: CrackleParams = field(default_factory=CrackleParams)
    current: CurrentParams = field(default_factory=CurrentParams)
    process_clock_offset_s: float = 0.0  # added to each live process sample's time

    @property
    def segmenter(self) -> SegmentationConfig:
        """What each station's segmenter is built from."""
        trigger = TriggerConfig(max_weld_s=self.trigger_max_weld_s)
        return SegmentationConfig(
            mode=self.segmentation,
            crackle=self.crackle,
            gate=self.gate,
            current=self.current,
            trigger=trigger,
        )


@dataclass
class PipelineCounters:
    """Monotonic counters of one pipeline."""

    blocks: int = 0
    frames: int = 0
    dropped_frames: int = 0  # reported by the source (overflow, ring full)
    nonfinite_samples: int = 0  # NaN/Inf the source replaced by 0
    welds_started: int = 0
    weld_audio_truncated: int = 0  # welds whose kept audio hit the max_weld_s bound

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return asdict(self)
