"""One weld's verdict as its windows are judged: rolling p_defect, one alert, the result.

After every window the rolling p_defect (progress events) is `deploy.pooling.topk_pool_np`
over the weld's window probabilities so far, with the artifact's `eval_pool_ratio` (the
pooling every verdict uses, not a re-implementation). The final result pools exactly the
whole windows inside [start, end): the segmenter decides the end after the arc stopped, so a
window cut meanwhile may reach past the end; it was reported in a progress event but is left
out of the result, which therefore pools what the artifact's `forward` pools on the weld's
audio.

The early alert follows `deploy.alert_rule`: it rests only on windows the segmenter has
confirmed inside the weld (`confirm`, from `Segmenter.arc_confirmed_until`), and fires when
`alert_windows` consecutive ones reach the alert threshold. The result's label is defect when
its pool reaches the decision threshold or that same rule holds on its windows, so no weld
that raised an alert can result good, and no result is good while its windows met the rule.
Each result also carries its margin to the threshold and, where the artifact has an
out-of-fold calibration, a confidence (`deploy.confidence`).

Pure bookkeeping: no I/O, no threads; the pipeline feeds it and publishes what it returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from deploy.alert_rule import DEFAULT_ALERT_WINDOWS, AlertRule, AlertRun, weld_label
from deploy.confidence import ConfidenceBand, margin
from deploy.contract import LABEL_NAMES
from deploy.errors import WeldmonError
from deploy.loader import DeployModel
from deploy.pooling import topk_pool_np
from deploy.segment.modes import SegmentationMode
from deploy.windows import window_count
from monitor.events import (
    DegradedReason,
    EndReason,
    Source,
    ThresholdSource,
    WeldAlert,
    WeldProgress,
    WeldResult,
    WeldStart,
    new_weld_id,
)
from monitor.pipeline.weld_facts import WeldFacts


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
    # the artifact's out-of-fold uncertain zone around its threshold; None: not calibrated
    confidence_band: ConfidenceBand | None = None

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
            ConfidenceBand.from_metadata(model.metadata, model.threshold),
        )

    def event_fields(self) -> dict[str, str | None]:
        """The model's identity as every event carries it."""
        return {
            "model_sha256": self.sha256,
            "model_name": self.name,
            "model_version": self.version,
        }


class ModelSwapError(WeldmonError):
    """A model cannot replace the running one without a restart."""


def check_swappable(new: ModelInfo, running: ModelInfo) -> None:
    """Raise ModelSwapError unless ``new`` takes the same windows (rate and length) as the
    running model: the resampler, the station histories and the window grid are built for
    those, so a model that wants others needs a restart."""
    if (new.sample_rate, new.chunk_samples) != (running.sample_rate, running.chunk_samples):
        raise ModelSwapError(
            f"the new model takes {new.chunk_samples} samples at {new.sample_rate} Hz, the "
            f"running model {running.chunk_samples} at {running.sample_rate} Hz; that change "
            "needs a restart"
        )


@dataclass(frozen=True)
class StationThresholds:
    """What judges one station's welds: the decision threshold (label = p >= it) and the
    early alert's, each with where it came from."""

    decision: float
    decision_source: ThresholdSource
    alert: float
    alert_source: ThresholdSource
    teach_in_id: str | None = None  # the accepted teach-in that set `decision`, if one did
    teach_in_welds: int | None = None  # how many welds it was taught from

    @classmethod
    def resolve(
        cls, artifact: float, decision: float | None = None, alert: float | None = None
    ) -> StationThresholds:
        """The artifact's threshold unless a config value overrides it; the alert follows the
        decision threshold unless set itself."""
        config, from_artifact = ThresholdSource.CONFIG, ThresholdSource.ARTIFACT
        d, d_src = (artifact, from_artifact) if decision is None else (decision, config)
        a, a_src = (d, d_src) if alert is None else (alert, config)
        return cls(d, d_src, a, a_src)

    def taught(self, taught: TaughtLimit) -> StationThresholds:
        """These thresholds with the decision threshold a teach-in set; the alert threshold
        follows it unless the config sets one."""
        source = ThresholdSource.TEACH_IN
        alert, alert_source = taught.threshold, source
        if self.alert_source == ThresholdSource.CONFIG:
            alert, alert_source = self.alert, self.alert_source
        return StationThresholds(
            taught.threshold, source, alert, alert_source, taught.teach_in_id, taught.welds
        )


class TaughtLimit(Protocol):
    """A station's accepted teach-in, as a weld's thresholds need it (monitor/teach)."""

    @property
    def teach_in_id(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def welds(self) -> int: ...


class TeachView(Protocol):
    """The stations' teach-in, as a weld sees it at its start (`monitor.teach.TeachIn`)."""

    def taught(self, station: str, model_sha256: str) -> TaughtLimit | None:
        """The station's calibration for this model, if one was accepted."""
        ...

    def running(self, station: str) -> str | None:
        """The id of the station's running teach-in, if one runs."""
        ...


@dataclass(frozen=True)
class TrackerOptions:
    """Fields every event of this daemon shares."""

    model: ModelInfo
    daemon_version: str
    segmentation: SegmentationMode
    include_window_probs: bool = False
    # stations whose config overrides a threshold; the others are judged by the artifact's
    overrides: Mapping[str, StationThresholds] = field(default_factory=dict)
    # the alert rule's run: this many consecutive confirmed windows at the alert threshold
    alert_windows: int = DEFAULT_ALERT_WINDOWS
    # the daemon's teach-in (None: replay, the shadow): a taught threshold beats the others
    teach: TeachView | None = None

    def thresholds(self, station: str) -> StationThresholds:
        """The thresholds that judge `station`'s welds."""
        found = self.overrides.get(station)
        limits = found if found is not None else StationThresholds.resolve(self.model.threshold)
        taught = self.teach.taught(station, self.model.sha256) if self.teach else None
        return limits.taught(taught) if taught is not None else limits

    def teach_run(self, station: str) -> str | None:
        """The running teach-in a weld starting now at `station` belongs to, if any."""
        return self.teach.running(station) if self.teach is not None else None


# A window whose audio is more than this share of exact zeros, in a weld whose NaN/Inf samples
# were replaced by zeros, is not judged: its verdict would be the model's opinion of the
# silence we put there (all-NaN audio used to come out as a good weld, p=0.47). No real
# microphone delivers exact zeros (its self-noise sets the low bits), so in such a weld the
# zeros are the repaired samples.
MAX_REPAIRED_SHARE = 0.5


def repaired_window(samples: np.ndarray) -> bool:
    """True when more than `MAX_REPAIRED_SHARE` of the window is exact digital zeros."""
    return bool(np.count_nonzero(samples) < (1.0 - MAX_REPAIRED_SHARE) * samples.size)


NOT_JUDGED = math.nan  # the probability recorded for a window whose inference failed


def judged(probs: list[float]) -> list[float]:
    """The probabilities that were judged (``NOT_JUDGED`` left out), in order."""
    return [p for p in probs if not math.isnan(p)]


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
    probs: list[float] = field(default_factory=list)  # by window index; NOT_JUDGED: failed
    alerted: bool = False
    degraded_reasons: set[DegradedReason] = field(default_factory=set)
    dropped_frames: int = 0
    not_finite: set[int] = field(default_factory=set)  # windows left out: repaired audio
    context: dict[str, str] | None = None  # the part it belongs to (start, alert, result)
    # the segmenter's word: the weld runs at least to this sample (its windows up to here
    # are certain to be pooled by the result), see `confirm`
    confirmed_until: int = 0

    def __post_init__(self) -> None:
        if not self.weld_id:
            self.weld_id = new_weld_id(self.station, self.started_at)
        # fixed at the start: a reload that changes them applies to the welds after this one
        self.limits = self.options.thresholds(self.station)
        self.teach_run = self.options.teach_run(self.station)  # its windows are taught
        self.alert_rule = AlertRule(self.limits.alert, self.options.alert_windows)
        self._alert_run = AlertRun(self.alert_rule)
        self._alert_scanned = 0  # windows the alert rule has seen (confirmed ones only)

    @property
    def started_at(self) -> datetime:
        """UTC of the start sample."""
        return self._utc(self.start_index)

    def _utc(self, index: int) -> datetime:
        return utc_datetime(self.epoch_utc + index / self.options.model.sample_rate)

    def _common(self) -> dict[str, Any]:
        return {
            "daemon_version": self.options.daemon_version,
            **self.options.model.event_fields(),
            "station": self.station,
            "weld_id": self.weld_id,
            "source": self.source,
            "threshold": self.limits.decision,
            "threshold_source": self.limits.decision_source,
            "teach_in_id": self.limits.teach_in_id,
            "teach_in_welds": self.limits.teach_in_welds,
            "teach_in": self.teach_run is not None,
            "teach_in_run": self.teach_run,
        }

    def start_event(self) -> WeldStart:
        """The weld_start event."""
        return WeldStart(
            **self._common(),
            started_at=self.started_at,
            segmentation=self.options.segmentation,
            alert_threshold=self.limits.alert,
            alert_threshold_source=self.limits.alert_source,
            context=self.context,
        )

    def degrade(self, reason: DegradedReason, dropped_frames: int = 0) -> None:
        """Mark the weld degraded (e.g. dropped_audio, nonfinite_samples)."""
        self.degraded_reasons.add(reason)
        self.dropped_frames += dropped_frames

    def judgeable(self, index: int, samples: np.ndarray) -> bool:
        """Whether window `index` may be judged: not when this weld had NaN/Inf repaired and
        the window is mostly the repair (see `MAX_REPAIRED_SHARE`); such a window is recorded
        as not judged, and a weld left with no judged window is not judged at all."""
        if DegradedReason.NONFINITE_SAMPLES in self.degraded_reasons and repaired_window(samples):
            self.not_finite.add(index)
            return False
        return True

    def _judged(self, n: int | None = None) -> list[float]:
        return judged(self.probs if n is None else self.probs[:n])

    def judged_probs(self, end_index: int) -> list[float]:
        """The probabilities of the judged whole windows inside [start, end_index): what the
        result pools."""
        return self._judged(window_count(max(0, end_index - self.start_index), self.chunk))

    @property
    def chunk(self) -> int:
        """Samples per window."""
        return self.options.model.chunk_samples

    def add_window(
        self, index: int, prob: float | None, window_end: int, progress: bool
    ) -> list[WeldProgress | WeldAlert]:
        """Record window `index` (None: its inference failed); returns progress and, the first
        time the alert rule holds on the confirmed windows, an alert."""
        if index != len(self.probs):
            raise ValueError(f"window {index} out of order (expected {len(self.probs)})")
        if prob is None:
            self.probs.append(NOT_JUDGED)
            if index not in self.not_finite:  # repaired audio is left out, not a failure
                self.degrade(DegradedReason.INFERENCE_FAILED)
            return [*self._check_alert()]
        self.probs.append(prob)
        out: list[WeldProgress | WeldAlert] = []
        if progress:
            judged = self._judged()
            m = self.options.model
            out.append(
                WeldProgress(
                    **self._common(),
                    window_index=index,
                    window_p_defect=prob,
                    p_defect=pool(judged, m.eval_pool_ratio),
                    n_windows=len(judged),
                    elapsed_s=(window_end - self.start_index) / m.sample_rate,
                )
            )
        return out + self._check_alert()

    def confirm(self, index: int) -> list[WeldAlert]:
        """The segmenter confirmed the arc up to sample `index` (its end will lie at or after
        it); returns the alert if the windows this confirms complete the alert rule."""
        self.confirmed_until = max(self.confirmed_until, index)
        return self._check_alert()

    def _confirmed_windows(self) -> int:
        """How many of the windows judged so far end by `confirmed_until`."""
        inside = window_count(max(0, self.confirmed_until - self.start_index), self.chunk)
        return min(inside, len(self.probs))

    def _check_alert(self) -> list[WeldAlert]:
        """Feed the newly confirmed windows to the alert rule; the alert, once."""
        n = self._confirmed_windows()
        for p in self.probs[self._alert_scanned : n]:
            if not math.isnan(p):
                self._alert_run.push(p)
        self._alert_scanned = max(self._alert_scanned, n)
        if self.alerted or not self._alert_run.met:
            return []
        self.alerted = True
        evidence = self._judged(n)
        return [
            WeldAlert(
                **self._common(),
                p_defect=pool(evidence, self.options.model.eval_pool_ratio),
                alert_threshold=self.limits.alert,
                alert_threshold_source=self.limits.alert_source,
                alert_windows=self.alert_rule.windows,
                context=self.context,
                n_windows=len(evidence),
                started_at=self.started_at,
                at=self._utc(self.start_index + n * self.chunk),
            )
        ]

    def result(
        self, end_index: int, end_reason: EndReason, facts: WeldFacts | None = None
    ) -> WeldResult:
        """The verdict over the whole windows inside [start, end_index), with the weld's
        optional `facts` (dropouts, process record, its end in the file)."""
        m = self.options.model
        judged = self.judged_probs(end_index)
        reasons = set(self.degraded_reasons)
        rule_met = False
        if not judged:  # no verdict: `judged` is false in the result
            if window_count(max(0, end_index - self.start_index), self.chunk) == 0:
                reasons.add(DegradedReason.TOO_SHORT)
            p, label, p_max = 0.0, 0, 0.0
        else:
            p = pool(judged, m.eval_pool_ratio)
            rule_met = self.alert_rule.met(judged)
            label = weld_label(p, self.limits.decision, rule_met)
            p_max = float(np.max(judged))
        band = m.confidence_band
        ended = max(end_index, self.start_index)
        return WeldResult(
            **{**self._common(), **self._fact_fields(facts)},
            started_at=self.started_at,
            ended_at=self._utc(ended),
            duration_s=(ended - self.start_index) / m.sample_rate,
            label=label,
            label_name=LABEL_NAMES[label],
            judged=bool(judged),
            p_defect=p,
            margin=margin(p, self.limits.decision) if judged else None,
            confidence=band.judge(p, self.limits.decision) if band and judged else None,
            alert_rule_met=rule_met,
            n_windows=len(judged),
            window_p_max=p_max,
            # a taught weld's windows are the teach-in's sample: its result carries them
            window_probs=judged if self.options.include_window_probs or self.teach_run else None,
            degraded=bool(reasons),
            degraded_reasons=sorted(reasons),
            dropped_frames=self.dropped_frames,
            end_reason=end_reason,
            context=self.context,
        )

    def _fact_fields(self, facts: WeldFacts | None) -> dict[str, Any]:
        if facts is None:
            return {}
        out: dict[str, Any] = {"dropouts": facts.dropouts, "process": facts.process}
        if facts.end_s is not None:
            out["source"] = self.source.model_copy(update={"end_s": facts.end_s})
        return out
