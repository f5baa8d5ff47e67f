"""The early-alert rule, and how it binds the weld's result: one rule for the daemon, replay
and offline weld judging.

A weld's result is the top-k pool of its windows (`deploy.pooling`). That pool cannot be
known before the weld ends: k grows with the weld's length, so the pool of the windows heard
so far may sit above or below the final one (for the first 20 windows it is the single
highest window). An alert raised on it could announce a weld whose result then says good.

The alert rule is therefore a property of the windows themselves that, once it holds for
some windows of a weld, holds for every longer run of them: **`windows` consecutive judged
windows each at or above the alert threshold** (float32 comparison, as `deploy.model.decide`).
Two facts make an alert impossible on a weld that results good, by construction:

1. the daemon applies the rule only to windows the segmenter has confirmed inside the weld
   (`Segmenter.arc_confirmed_until`), so every window behind an alert is a window the result
   pools; and
2. the result's label is defect when its pool reaches the decision threshold **or** the rule
   holds on its windows (`weld_label`): the rule can only keep holding as windows are added.

With the alert threshold at the decision threshold (the default) and 2 windows, the second
clause changes no label of a weld up to 40 windows: two windows at or above the threshold put
the mean of the top k <= 2 windows at or above it too. It decides alone only for longer welds,
or where a station sets its alert threshold below its decision threshold (then that station's
alert is a second, more sensitive defect rule, and its results say so: `alert_rule_met`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

DEFAULT_ALERT_WINDOWS = 2  # consecutive windows: one loud window is no evidence of a defect


@dataclass(frozen=True)
class AlertRule:
    """`windows` consecutive judged windows at or above `threshold`."""

    threshold: float
    windows: int = DEFAULT_ALERT_WINDOWS

    def __post_init__(self) -> None:
        if self.windows < 1:
            raise ValueError(f"alert windows must be at least 1, got {self.windows}")

    def reaches(self, p: float) -> bool:
        """One window at or above the threshold, compared in float32."""
        return bool(np.float32(p) >= np.float32(self.threshold))

    def met(self, probs: Iterable[float]) -> bool:
        """Whether the judged window probabilities `probs` (in window order) hold a run."""
        run = AlertRun(self)
        return any(run.push(p) for p in probs)


class AlertRun:
    """The rule applied window by window (each window once, in order)."""

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self._run = 0
        self.met = False

    def push(self, p: float) -> bool:
        """The next judged window's probability; True once the rule holds (and from then on)."""
        self._run = self._run + 1 if self.rule.reaches(p) else 0
        self.met = self.met or self._run >= self.rule.windows
        return self.met


def weld_label(pooled: float, threshold: float, rule_met: bool) -> int:
    """The weld's label: defect (1) when its pooled p_defect reaches `threshold` (float32) or
    the alert rule holds on its windows."""
    return int(rule_met or np.float32(pooled) >= np.float32(threshold))
