"""The out-of-fold calibration an artifact may carry (metadata key `calibration`), read
without torch: what its figures say, and when they are too thin to lean on.

Written at training by `training.oof` (an ensemble run's threshold, tuned on weld scores
from members that never saw the weld's config folder). Keys:

    method               "out_of_fold"
    criterion            how the threshold was chosen ("macro_f1": the training grid's best)
    threshold            the artifact's decision threshold
    false_alarm_rate     share of the out-of-fold good welds at or above it ...
    false_alarm_interval ... with its Wilson 95 % interval [low, high]
    recall               share of the out-of-fold defect welds at or above it ...
    recall_interval      ... with its Wilson 95 % interval
    n_good, n_defect     out-of-fold welds of each class
    roc_auc              ranking quality of the out-of-fold scores ...
    roc_auc_interval     ... with a bootstrap 95 % interval over config folders
    band                 [low, high]: scores the out-of-fold predictions could not call
                         reliably (`training.oof.uncertain_band`); a verdict whose p_defect
                         lies inside it is a low-confidence one

A figure that cannot be computed (e.g. no good weld) is null.
"""

from __future__ import annotations

from typing import Any

CALIBRATION_KEY = "calibration"  # the metadata key
# A calibration is "wide" (its figures are a rough guide only) when the ROC-AUC interval is
# wider than this, or a class has fewer out-of-fold welds than MIN_WELDS_PER_CLASS: one weld
# more or less then moves the false-alarm rate or the recall by 10 points or more.
WIDE_AUC_INTERVAL = 0.2
MIN_WELDS_PER_CLASS = 10


def calibration_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The artifact metadata's calibration, or None when it has none (single-model and
    enrolled artifacts, the original pipeline's)."""
    cal = meta.get(CALIBRATION_KEY)
    return cal if isinstance(cal, dict) else None


def in_band(calibration: dict[str, Any], p_defect: float) -> bool:
    """Whether `p_defect` lies inside the calibration's uncertain band (inclusive)."""
    low, high = calibration["band"]
    return float(low) <= p_defect <= float(high)


def calibration_warnings(calibration: dict[str, Any]) -> list[str]:
    """Plain sentences for each reason the calibration's figures are a rough guide only."""
    out = []
    interval = calibration.get("roc_auc_interval") or [None, None]
    if None in interval:
        out.append("the out-of-fold ROC-AUC has no interval (one class, or too few folders)")
    elif interval[1] - interval[0] > WIDE_AUC_INTERVAL:
        out.append(
            f"wide interval: the out-of-fold ROC-AUC's 95% interval [{interval[0]:.3f}, "
            f"{interval[1]:.3f}] is wider than {WIDE_AUC_INTERVAL}; the model's ranking of "
            "welds at new setups is uncertain"
        )
    for key, what in (("n_good", "good"), ("n_defect", "defect")):
        n = int(calibration.get(key) or 0)
        if n < MIN_WELDS_PER_CLASS:
            out.append(
                f"wide interval: only {n} out-of-fold {what} weld(s) (< {MIN_WELDS_PER_CLASS}): "
                f"the {'false-alarm rate' if what == 'good' else 'recall'} is a rough figure; "
                "calibrate at the cell (teach-in) before trusting it"
            )
    return out


def _rate(value: Any, interval: Any) -> str:
    if value is None:
        return "n/a"
    low, high = interval or (None, None)
    spread = f" (95% [{low:.3f}, {high:.3f}])" if low is not None and high is not None else ""
    return f"{value:.3f}{spread}"


def format_calibration(calibration: dict[str, Any]) -> list[str]:
    """Printable lines: threshold, out-of-fold false-alarm rate and recall with their
    intervals, ROC-AUC with its interval, the uncertain band."""
    c = calibration
    low, high = c["band"]
    false_alarms = _rate(c.get("false_alarm_rate"), c.get("false_alarm_interval"))
    return [
        f"threshold {c['threshold']:.3f} ({c.get('method')}, {c.get('criterion', '?')} over "
        f"{c.get('n_good')} good + {c.get('n_defect')} defect out-of-fold welds)",
        f"out-of-fold false-alarm rate {false_alarms}",
        f"out-of-fold recall {_rate(c.get('recall'), c.get('recall_interval'))}",
        f"out-of-fold ROC-AUC {_rate(c.get('roc_auc'), c.get('roc_auc_interval'))}",
        f"uncertain band [{low:.3f}, {high:.3f}] (p_defect inside: low confidence)",
    ]
