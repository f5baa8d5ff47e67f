"""How sure a verdict is: its margin to the threshold, and whether it lies where the model's
cross-validation could not tell good from defect.

An artifact trained by weldmon carries, in its metadata, the out-of-fold calibration of its
threshold (`deploy.calibration`; its `band`: the scores around the threshold within which
out-of-fold calls were unreliable). A verdict whose p_defect lies inside that band is `low`
confidence, outside it `high`. The band is kept relative to the threshold, so a station that
moves its threshold (config or teach-in) moves the band with it. An artifact without a
calibration (the original pipeline's, older exports) gives no confidence (None): nothing
measured says how wide the uncertain zone is, and a made-up width would read as a
measurement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from deploy.calibration import calibration_of

Confidence = Literal["high", "low"]


@dataclass(frozen=True)
class ConfidenceBand:
    """The uncertain zone as distances below and above the threshold (each >= 0)."""

    below: float
    above: float

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], threshold: float) -> ConfidenceBand | None:
        """The band of an artifact's `calibration.band` ([low, high] around `threshold`);
        None when the artifact has none or it is malformed (never a guess)."""
        calibration = calibration_of(dict(meta))
        band = calibration.get("band") if calibration is not None else None
        if not isinstance(band, list | tuple) or len(band) != 2:
            return None
        lo, hi = band
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (lo, hi)):
            return None
        if not 0.0 <= lo <= hi <= 1.0:
            return None
        return cls(max(0.0, threshold - float(lo)), max(0.0, float(hi) - threshold))

    def judge(self, p_defect: float, threshold: float) -> Confidence:
        """`low` when `p_defect` lies inside the band around `threshold`, else `high`."""
        inside = threshold - self.below <= p_defect <= threshold + self.above
        return "low" if inside else "high"


def margin(p_defect: float, threshold: float) -> float:
    """Signed distance of the score to the threshold (positive: the defect side)."""
    return float(p_defect) - float(threshold)
