"""The evaluation report opens with one paragraph in plain words (what was judged, how many
welds, the verdicts' quality with its interval, whether to trust it), weld mode first; the
same paragraph ends `weldmon evaluate`'s output."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from training.evaluate import EvaluationResult, FileResult
from training.metrics import wilson_interval
from training.report import _modes, checks
from training.summary import MIN_WELDS_PER_CLASS, summary_facts, summary_paragraph

TIMEOUT_S = 600


def _rows(good_right: int, good_wrong: int, defect_right: int, defect_wrong: int) -> list:
    rows = []
    spec = [(0, 0, good_right), (0, 1, good_wrong), (1, 1, defect_right), (1, 0, defect_wrong)]
    for y, label, n in spec:
        for i in range(n):
            folder = f"{'defect' if y else 'good'}_folder_{i % 4}"
            code = "07" if y else "00"
            rows.append(
                FileResult(
                    f"r{y}{label}{i}-{code}",
                    f"/d/{folder}/{y}{label}{i}.flac",
                    folder,
                    code,
                    y,
                    p_defect=0.9 if label else 0.1,
                    label=label,
                    n_windows=20,
                    weld=0,
                )
            )
    return rows


def _result(rows: list, meta: dict) -> EvaluationResult:
    return EvaluationResult(
        {"sha256": "ab" * 32, "threshold": 0.5, "name": "weldmon-mil", "version": "3"},
        [],
        {},
        rows,
        {"TOTAL_WELDS": len(rows)},
        "current",
        meta,
    )


HELD_OUT = {"provenance": {"split": {"train_folders": ["elsewhere"], "val_folders": ["other"]}}}


def test_enough_held_out_welds_are_trusted_within_their_interval() -> None:
    n = MIN_WELDS_PER_CLASS + 5
    result = _result(_rows(n, 0, n, 0), HELD_OUT)
    facts = summary_facts(result, checks(result)["warnings"])
    assert (facts.trust, facts.reasons) == ("yes", [])
    text = summary_paragraph(facts, "current")
    assert text.startswith(f"weldmon-mil 3 judged {2 * n} welds")
    assert "Can it be trusted? Yes" in text


def test_few_welds_say_not_yet_and_tuned_on_or_degenerate_say_no() -> None:
    few = _result(_rows(3, 0, 1, 0), HELD_OUT)
    facts = summary_facts(few, checks(few)["warnings"])
    assert facts.trust == "not yet" and facts.judged == 4
    assert any(r.startswith("too few welds: 3 good and 1 defect") for r in facts.reasons)
    assert "Not yet, we do not know" in summary_paragraph(facts)
    tuned = _result(
        _rows(30, 0, 30, 0), {"provenance": {"split": {"val_folders": ["good_folder_0"]}}}
    )
    facts = summary_facts(tuned, checks(tuned)["warnings"])
    assert facts.trust == "no" and facts.reasons[0].startswith("tuned-on")
    every_defect = _result(_rows(0, 30, 30, 0), HELD_OUT)
    facts = summary_facts(every_defect, checks(every_defect)["warnings"])
    assert facts.trust == "no"
    assert any("every one of the 60 verdicts is defect" in r for r in facts.reasons)


@pytest.mark.real_data
@pytest.mark.slow
def test_the_report_on_the_shared_recordings_opens_with_its_facts_in_plain_words(
    compat_artifact: Path, weld_audio_dir: Path, recordings: list, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "weldmon.cli", "evaluate", "--model", str(compat_artifact),
         "--data-root", str(weld_audio_dir), "--report", str(report), "--mode", "both"],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    stored = json.loads((report / "metrics.json").read_text())
    facts, text = stored["summary"], stored["summary_text"]
    welds = json.loads((report / "per_weld.json").read_text())
    judged = [w for w in welds if w["error"] == "" and w["flag"] == ""]
    good = sum(r.label_code == "00" for r in recordings)
    # Counts: every recording has its sensor log, so one weld each (cut by its arc current).
    assert facts["mode"] == "weld" and facts["recordings"] == len(recordings)
    assert (facts["judged"], facts["good"], facts["defect"]) == (
        len(judged), good, len(recordings) - good)  # fmt: skip
    assert facts["config_folders"] == len({r.config_folder for r in recordings})
    right = sum(w["correct"] for w in judged)
    low, high = wilson_interval(right, len(judged))
    assert facts["correct"] == right
    assert (facts["accuracy_low"], facts["accuracy_high"]) == pytest.approx((low, high))
    # The paragraph states them: counts, the interval in percent, and why not to trust it.
    assert f"judged {len(judged)} welds cut from {len(recordings)} recordings" in text
    assert f"{good} good and {len(recordings) - good} defect" in text
    assert f"{right} of {len(judged)} verdicts were right" in text
    assert f"95 % interval {100 * low:.0f}-{100 * high:.0f} %" in text
    assert facts["trust"] == "not yet"  # 23 welds; the original's artifact has no provenance
    assert "too few welds" in text and "unknown provenance" in text
    # First in the report, weld mode (the daemon's) before file mode; last on stdout.
    html = (report / "report.html").read_text()
    body = html.split("<body>", 1)[1]
    assert re.search(r"<h1>[^<]*</h1>\s*<p id=\"summary\"", body)
    assert body.index("<h2>weld mode") < body.index("<h2>file mode")
    assert done.stdout.rstrip().endswith(text)


def test_a_degenerate_file_mode_under_a_sound_weld_mode_is_said_in_the_paragraph() -> None:
    n = MIN_WELDS_PER_CLASS + 5
    welds = _rows(n, 0, n, 0)
    files = [dataclasses.replace(r, weld=-1, label=1, p_defect=0.9) for r in welds]
    result = _result(welds, HELD_OUT)
    result.files, result.metrics = files, {"TOTAL_FILES": len(files)}
    found = checks(result)
    facts = summary_facts(result, found["warnings"])
    assert facts.trust == "yes"  # weld mode, what the daemon judges, is sound
    text = summary_paragraph(facts)
    assert "File mode (whole recordings), further down, says nothing useful" in text
    assert f"every one of the {2 * n} verdicts is defect" in text
    # Weld mode leads the report, file mode follows.
    assert [name.split(" (")[0] for name, *_ in _modes(result)] == ["weld mode", "file mode"]
