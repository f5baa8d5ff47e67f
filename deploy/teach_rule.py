"""The teach-in threshold rule: a decision threshold at a target false-alarm rate, learnt
from the windows of a station's (or a cell's) good welds. One rule for both places it is
taught: the running daemon's teach-in (monitor/teach) and `weldmon enroll --base`
(training/enroll.py), so a cell artifact and a taught station agree on the same welds.

Why windows and not welds: 1 to 4 taught welds give 1 to 4 pooled scores, too few points
for any quantile (the 99th percentile of three numbers is their maximum, and says nothing
about the fourth weld). Their windows (a weld of 20 s gives 20) are the sample instead.

Why a fitted distribution and not the windows themselves: a weld's score is the top-k pool
of its windows (`deploy.pooling`; with the usual ratio 0.05 and 20 windows, k = 1: the
weld's loudest window), so a 1 % false-alarm rate per weld sits at the 99.95th percentile
of the windows, far beyond the largest of the 20-100 windows taught. Resampling the taught
windows can never go past their maximum: on simulated cells it flagged 60-80 % of new good
welds after one taught weld. So the rule fits a normal distribution to the windows'
logits (probabilities are bounded, their logits are not, and a CNN's good-weld logits are
near normal), draws many synthetic welds of the taught welds' typical window count from it
(fixed seed: the same welds give the same threshold), pools each with the artifact's
`eval_pool_ratio` exactly as a verdict does, and takes the (1 - target) quantile of those
pooled scores. On the same simulated cells that flags 0.1-2 % of new good welds from
3 taught welds on (tests/test_teach_in.py), and 0.5 % from 30. The threshold is also never
at or under a taught weld's own score: a weld the operator vouched for stays good. What one
weld cannot show is how welds differ from each other (part fit, wire, gas): hence the
warning below `ROUGH_BELOW_WELDS` welds.

The result is then bounded by guards (`lower`, `upper`): teach-in must never make a station
blind (above `upper`) nor hair-trigger (below `lower`), whatever welds it was given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deploy.errors import WeldmonError
from deploy.pooling import topk_pool_np

DRAWS = 4000  # synthetic welds drawn: the 99th percentile then rests on 40 of them
LOGIT_CLIP = 1e-6  # probabilities of exactly 0 or 1 have no logit
MIN_LOGIT_SD = 0.25  # near-identical windows must not fit a spread of nothing
SEED = 19  # fixed: the same taught windows always give the same threshold
ROUGH_BELOW_WELDS = 5  # fewer taught welds than this: the calibration is rough (warned)
DEFAULT_TARGET_FALSE_ALARM = 0.01  # the share of good welds a taught threshold may flag
DEFAULT_MAX_BELOW_ARTIFACT = 0.1  # the lower guard: the artifact's threshold minus this
DEFAULT_MAX_THRESHOLD = 0.95  # the upper guard: above it a station is all but blind


def guards(
    artifact_threshold: float,
    min_threshold: float | None = None,
    max_below_artifact: float = DEFAULT_MAX_BELOW_ARTIFACT,
    max_threshold: float = DEFAULT_MAX_THRESHOLD,
) -> tuple[float, float]:
    """The (lower, upper) bounds of a taught threshold: `min_threshold`, or the artifact's
    threshold minus `max_below_artifact`, and `max_threshold`."""
    lower = min_threshold
    if lower is None:
        lower = max(0.0, artifact_threshold - max_below_artifact)
    return min(lower, max_threshold), max_threshold


class TeachRuleError(WeldmonError):
    """The taught sample cannot give a threshold (no window, a bad target or bounds)."""


@dataclass(frozen=True)
class TaughtThreshold:
    """The threshold and how it was reached."""

    threshold: float  # what judges the station's welds from now on
    raw: float  # the simulated pools' quantile (or the highest taught weld) before the guards
    bounded: str | None  # "lower" or "upper" when a guard moved it, else None
    welds: int
    windows: int
    target_false_alarm: float
    rough: bool  # fewer than ROUGH_BELOW_WELDS welds: the warning the operator gets
    # the taught welds' median pooled score: where the station's good welds sat when it was
    # taught (the daemon's drift watch, monitor/teach/drift.py, measures from it)
    reference: float = 0.0

    @property
    def warning(self) -> str | None:
        """The operator's warning, if any."""
        parts = []
        if self.rough:
            parts.append(
                f"only {self.welds} weld(s) taught: the calibration is rough; teach "
                f"{ROUGH_BELOW_WELDS} or more for a threshold you can rely on"
            )
        if self.bounded is not None:
            parts.append(
                f"the taught threshold {self.raw:.4f} was held at the {self.bounded} guard "
                f"{self.threshold:.4f}"
            )
        return "; ".join(parts) or None


def taught_threshold(
    welds: Sequence[Sequence[float]],
    pool_ratio: float,
    target_false_alarm: float,
    lower: float,
    upper: float,
) -> TaughtThreshold:
    """The threshold at `target_false_alarm` from the welds' window probabilities, bounded
    to [lower, upper]; TeachRuleError when there is no window or the arguments are wrong."""
    if not 0.0 < target_false_alarm < 0.5:
        raise TeachRuleError(
            f"target false-alarm rate must be in (0, 0.5), not {target_false_alarm}"
        )
    if not 0.0 <= lower <= upper <= 1.0:
        raise TeachRuleError(f"guards must satisfy 0 <= lower <= upper <= 1, not {lower}, {upper}")
    sizes = [len(w) for w in welds if len(w) > 0]
    windows = np.asarray([p for w in welds for p in w], dtype=np.float64)
    if not sizes:
        raise TeachRuleError("no judged window was taught")
    if not np.all(np.isfinite(windows)) or np.any((windows < 0) | (windows > 1)):
        raise TeachRuleError("a taught window probability is not in [0, 1]")
    clipped = np.clip(windows, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    logits = np.log(clipped / (1.0 - clipped))
    spread = float(np.std(logits, ddof=1)) if logits.size > 1 else 0.0
    spread = max(spread, MIN_LOGIT_SD)
    n = int(np.median(sizes))  # the station's typical weld length, in windows
    rng = np.random.default_rng(SEED)
    draws = 1.0 / (1.0 + np.exp(-rng.normal(float(logits.mean()), spread, size=(DRAWS, n))))
    pools = np.fromiter((topk_pool_np(d, pool_ratio) for d in draws), float, DRAWS)
    taught_pools = [topk_pool_np(np.asarray(w), pool_ratio) for w in welds if len(w) > 0]
    # the label is p >= threshold: a hair above the highest taught weld keeps them all good
    raw = max(
        float(np.quantile(pools, 1.0 - target_false_alarm, method="higher")),
        math.nextafter(max(taught_pools), 1.0),
    )
    threshold, bounded = raw, None
    if raw < lower:
        threshold, bounded = lower, "lower"
    elif raw > upper:
        threshold, bounded = upper, "upper"
    return TaughtThreshold(
        threshold=threshold,
        raw=raw,
        bounded=bounded,
        welds=len(sizes),
        windows=int(windows.size),
        target_false_alarm=target_false_alarm,
        rough=len(sizes) < ROUGH_BELOW_WELDS,
        reference=float(np.median(taught_pools)),
    )
