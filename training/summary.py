"""The evaluation's opening paragraph in plain words, for a process engineer: what was judged,
how many welds, how good the verdicts were with their 95 % interval, and whether that can be
trusted yet.

Weld mode is what the daemon judges, so it is the headline whenever it ran; file mode (the
whole recording) is reported only when weld mode did not run. The trust verdict collects
every reason not to rely on the figures: too few welds for a narrow interval, welds from
folders the artifact was trained or tuned on, a degenerate model (one answer for everything,
or scores that separate nothing), one class missing, no training provenance.

Pure: the facts (`SummaryFacts`, also stored in metrics.json) and the paragraph built from
them; `training.report` puts the paragraph at the top of the report and `weldmon evaluate`
prints it last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from training.evaluate import EvaluationResult, FileResult
from training.metrics import wilson_interval

# Fewest judged welds of each class (good, defect) before the figures say more than "we do
# not know yet": at 20 all-correct welds the 95 % Wilson interval still reaches down to 84 %.
MIN_WELDS_PER_CLASS = 20
# A 95 % interval on the share of right verdicts wider than this many points is too wide to
# act on (at 100 % right that takes about 17 welds; at 90 % about 35).
MAX_INTERVAL_WIDTH = 0.20


@dataclass(frozen=True)
class SummaryFacts:
    """The numbers the paragraph states, in the same words (metrics.json ``summary``)."""

    mode: str  # "weld" (what the daemon judges) or "file" (whole recordings)
    artifact: str  # name and version, or the sha256's first 12 characters
    recordings: int  # files evaluated (judged or not)
    config_folders: int
    judged: int  # welds (or files) with a verdict
    good: int
    defect: int
    not_judged: int  # errors, too-short welds, files without a weld
    correct: int
    accuracy: float  # NaN when nothing was judged
    accuracy_low: float  # 95 % Wilson interval
    accuracy_high: float
    defects_caught: int
    false_alarms: int  # good welds called defect
    trust: str  # "no", "not yet" or "yes"
    reasons: list[str] = field(default_factory=list)  # why not (empty when trust is "yes")
    # the other mode's degenerate flags (file mode's "every file defect" under weld mode)
    other_mode: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN as None)."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def summary_facts(result: EvaluationResult, warnings: Sequence[str]) -> SummaryFacts:
    """The facts of the headline mode; `warnings` are the report's (overlap, degenerate)."""
    mode = "weld" if result.weld_metrics else "file"
    rows: list[FileResult] = result.welds if mode == "weld" else result.files
    judged = [r for r in rows if r.judged]
    good = sum(r.y_true == 0 for r in judged)
    defect = len(judged) - good
    correct = sum(r.label == r.y_true for r in judged)
    low, high = wilson_interval(correct, len(judged))
    reasons = _reasons(mode, judged, good, defect, low, high, warnings)
    hard = any(r.startswith(("in-sample", "tuned-on", "degenerate")) for r in reasons)
    trust = "no" if hard else ("not yet" if reasons else "yes")
    return SummaryFacts(
        mode=mode,
        artifact=_artifact_name(result.model),
        recordings=len({r.path for r in rows}),
        config_folders=len({r.config_folder for r in rows}),
        judged=len(judged),
        good=good,
        defect=defect,
        not_judged=len(rows) - len(judged),
        correct=correct,
        accuracy=correct / len(judged) if judged else float("nan"),
        accuracy_low=low,
        accuracy_high=high,
        defects_caught=sum(r.y_true == 1 and r.label == 1 for r in judged),
        false_alarms=sum(r.y_true == 0 and r.label == 1 for r in judged),
        trust=trust,
        reasons=reasons,
        other_mode=[
            w.split(" mode: ", 1)[1]
            for w in warnings
            if " mode: degenerate" in w and not w.startswith(mode)
        ],
    )


def _reasons(
    mode: str,
    judged: Sequence[FileResult],
    good: int,
    defect: int,
    low: float,
    high: float,
    warnings: Sequence[str],
) -> list[str]:
    unit = "welds" if mode == "weld" else "recordings"
    out = []
    for w in warnings:
        if w.startswith("OVERLAP"):
            out.append("in-sample: some welds come from folders the model was trained on")
        elif w.startswith("TUNED-ON"):
            out.append("tuned-on: some welds come from folders that chose its threshold")
        elif "degenerate" in w and w.split(":", 1)[0].startswith(mode):
            out.append("degenerate: " + w.split("degenerate: ", 1)[1])
        elif w.startswith("no training provenance"):
            out.append("unknown provenance: whether the model saw these welds cannot be checked")
    if not judged:
        out.append(f"nothing was judged: no {unit} with a verdict")
    elif good == 0 or defect == 0:
        missing = "good" if good == 0 else "defect"
        out.append(f"one class only: no {missing} {unit}, so false alarms or misses are unknown")
    if judged and min(good, defect) < MIN_WELDS_PER_CLASS:
        out.append(
            f"too few {unit}: {good} good and {defect} defect, under {MIN_WELDS_PER_CLASS} of each"
        )
    if judged and high - low > MAX_INTERVAL_WIDTH:
        out.append(f"the interval spans {100 * (high - low):.0f} points")
    return out


def _artifact_name(model: dict[str, Any]) -> str:
    name, version = model.get("name"), model.get("version")
    if name:
        return f"{name} {version}" if version else str(name)
    sha = str(model.get("sha256") or "")
    return f"the unnamed artifact {sha[:12]}" if sha else "the artifact"


def summary_paragraph(facts: SummaryFacts, segmentation: str = "auto") -> str:
    """One paragraph in plain words (no metric keys, no jargon beyond "interval")."""
    f = facts
    if f.mode == "weld":
        what = (
            f"{f.artifact} judged {f.judged} welds cut from {f.recordings} recordings in "
            f"{f.config_folders} config folders (segmentation {segmentation}, the way the "
            "daemon judges them)"
        )
    else:
        what = (
            f"{f.artifact} judged {f.judged} whole recordings from {f.config_folders} config "
            "folders (file mode: the daemon judges welds, which this run did not cut)"
        )
    parts = [f"{what}: {f.good} good and {f.defect} defect."]
    if f.not_judged:
        parts.append(f"{f.not_judged} could not be judged (see the table).")
    if f.judged:
        parts.append(
            f"{f.correct} of {f.judged} verdicts were right ({100 * f.accuracy:.0f} %; "
            f"95 % interval {100 * f.accuracy_low:.0f}-{100 * f.accuracy_high:.0f} %): "
            f"{f.defects_caught} of {f.defect} defects caught, {f.false_alarms} false alarms "
            f"on {f.good} good {'welds' if f.mode == 'weld' else 'recordings'}."
        )
    if f.other_mode:
        other = "File mode (whole recordings)" if f.mode == "weld" else "Weld mode"
        flags = "; ".join(o.removeprefix("degenerate: ") for o in f.other_mode)
        parts.append(f"{other}, further down, says nothing useful: {flags}.")
    if f.trust == "yes":
        parts.append("Can it be trusted? Yes, within that interval: held out, enough welds.")
    else:
        answer = "No" if f.trust == "no" else "Not yet, we do not know"
        parts.append(f"Can it be trusted? {answer}: " + "; ".join(f.reasons) + ".")
    return " ".join(parts)
