"""One weld's verdict as its windows are judged: rolling p_defect, one alert, the result.

After every window the rolling p_defect is `deploy.pooling.topk_pool_np` over the weld's
window probabilities so far, with the artifact's `eval_pool_ratio` (the pooling every verdict
uses, not a re-implementation), and the label is `deploy.model.decide` (p >= threshold in
float32, as in the artifact). The final result
pools exactly the whole windows inside [start, end): with the arc gate the end is decided a
hang-over after the arc stopped, so a window cut meanwhile may reach past the end; it was
reported in a progress event but is left out of the result, which therefore equals the
artifact's `forward` on the weld's audio.

Pure bookkeeping: no I/O, no threads; the pipeline feeds it and publishes what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from deploy.contract import LABEL_NAMES
from deploy.loader import DeployModel
from deploy.model import decide
from deploy.pooling import topk_pool_np
from deploy.windows import window_count
from monitor.events import (
    EndReason,
    SegmentationMode,
    Source,
    WeldAlert,
    WeldProgress,
    WeldResult,
    WeldStart,
    new_weld_id,
)


@dataclass(frozen=True)
class ModelInfo:
    """What the tracker needs to know about the model (never the model itself: that belongs
    to the inference thread)."""

    sha256: str
    sample_rate: int
    chunk_samples: int
    eval_pool_ratio: float
    threshold: float
    name: str | None = None
    version: str | None = None

    @classmethod
    def of(cls, model: DeployModel) -> ModelInfo:
        """The facts of a loaded artifact."""
        return cls(
            model.sha256,
            model.sample_rate,
            model.chunk_samples,
            model.eval_pool_ratio,
            model.threshold,
            model.model_name,
            model.model_version,
        )

    def event_fields(self) -> dict[str, str | None]:
        """The model's identity as every event carries it."""
        return {
            "model_sha256": self.sha256,
            "model_name": self.name,
            "model_version": self.version,
        }


@dataclass(frozen=True)
class TrackerOptions:
    """Fields every event of this daemon shares."""

    model: ModelInfo
    daemon_version: str
    segmentation: SegmentationMode
    include_window_probs: bool = False


def utc_datetime(posix_s: float) -> datetime:
    """POSIX seconds -> aware UTC datetime."""
    return datetime.fromtimestamp(posix_s, UTC)


def pool(probs: list[float], ratio: float) -> float:
    """Top-k pool of the window probabilities so far (deploy's function)."""
    return topk_pool_np(np.asarray(probs, dtype=np.float32), ratio)


@dataclass
class WeldTracker:
    """The state of one weld from its start boundary to its result."""

    options: TrackerOptions
    station: str
    source: Source
    start_index: int  # on the station's model-rate clock
    epoch_utc: float  # UTC of sample 0 of the stream epoch
    weld_id: str = ""
    probs: list[float] = field(default_factory=list)  # by window index; NaN = not judged
    alerted: bool = False
    degraded_reasons: set[str] = field(default_factory=set)
    dropped_frames: int = 0

    def __post_init__(self) -> None:
        if not self.weld_id:
            self.weld_id = new_weld_id(self.station, self.started_at)

    @property
    def started_at(self) -> datetime:
        """UTC of the start sample."""
        return self._utc(self.start_index)

    def _utc(self, index: int) -> datetime:
        return utc_datetime(self.epoch_utc + index / self.options.model.sample_rate)

    def _common(self) -> dict:
        return {
            "daemon_version": self.options.daemon_version,
            **self.options.model.event_fields(),
            "station": self.station,
            "weld_id": self.weld_id,
            "source": self.source,
        }

    def start_event(self) -> WeldStart:
        """The weld_start event."""
        return WeldStart(
            **self._common(),
            started_at=self.started_at,
            segmentation=self.options.segmentation,
            threshold=self.options.model.threshold,
        )

    def degrade(self, reason: str, dropped_frames: int = 0) -> None:
        """Mark the weld degraded (e.g. dropped_audio, nonfinite_samples)."""
        self.degraded_reasons.add(reason)
        self.dropped_frames += dropped_frames

    def _judged(self, n: int | None = None) -> list[float]:
        probs = self.probs if n is None else self.probs[:n]
        return [p for p in probs if p == p]  # NaN marks a window whose inference failed

    def add_window(
        self, index: int, prob: float | None, window_end: int, progress: bool
    ) -> list[WeldProgress | WeldAlert]:
        """Record window `index` (None: its inference failed); returns progress and, the first
        time the rolling p_defect reaches the threshold, an alert."""
        if index != len(self.probs):
            raise ValueError(f"window {index} out of order (expected {len(self.probs)})")
        if prob is None:
            self.probs.append(float("nan"))
            self.degrade("inference_failed")
            return []
        self.probs.append(prob)
        judged = self._judged()
        p = pool(judged, self.options.model.eval_pool_ratio)
        m = self.options.model
        elapsed = (window_end - self.start_index) / m.sample_rate
        out: list[WeldProgress | WeldAlert] = []
        if progress:
            out.append(
                WeldProgress(
                    **self._common(),
                    window_index=index,
                    window_p_defect=prob,
                    p_defect=p,
                    n_windows=len(judged),
                    threshold=m.threshold,
                    elapsed_s=elapsed,
                )
            )
        if not self.alerted and decide(p, m.threshold):
            self.alerted = True
            out.append(
                WeldAlert(
                    **self._common(),
                    p_defect=p,
                    threshold=m.threshold,
                    n_windows=len(judged),
                    started_at=self.started_at,
                    at=self._utc(window_end),
                )
            )
        return out

    def result(self, end_index: int, end_reason: EndReason) -> WeldResult:
        """The verdict over the whole windows inside [start, end_index)."""
        m = self.options.model
        n_whole = window_count(max(0, end_index - self.start_index), m.chunk_samples)
        judged = self._judged(n_whole)
        reasons = set(self.degraded_reasons)
        if not judged:
            reasons.add("too_short")
            p, label, p_max = 0.0, 0, 0.0
        else:
            p = pool(judged, m.eval_pool_ratio)
            label = decide(p, m.threshold)
            p_max = float(np.max(judged))
        ended = max(end_index, self.start_index)
        return WeldResult(
            **self._common(),
            started_at=self.started_at,
            ended_at=self._utc(ended),
            duration_s=(ended - self.start_index) / m.sample_rate,
            label=label,
            label_name=LABEL_NAMES[label],
            judged=bool(judged),
            p_defect=p,
            threshold=m.threshold,
            n_windows=len(judged),
            window_p_max=p_max,
            window_probs=judged if self.options.include_window_probs else None,
            degraded=bool(reasons),
            degraded_reasons=sorted(reasons),
            dropped_frames=self.dropped_frames,
            end_reason=end_reason,
        )
