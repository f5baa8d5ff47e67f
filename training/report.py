"""Write an evaluation to a folder: per-file and per-weld CSV/JSON, metrics, plots, one HTML.

The HTML page is meant to be trusted or distrusted at a glance: one paragraph in plain words
first (`training.summary`: what was judged, how many welds, how good with its interval,
whether to trust it), then provenance (data root, split, date, command, version, artifact),
the warnings (evaluated files the artifact was trained or tuned on; degenerate models), then
per mode, weld mode (what the daemon judges) before file mode, the figures, the
per-class counts with 95 % intervals, the plots (ROC, PR, reliability, threshold vs
precision/recall, confusion, worst errors) and the full per-file (or per-weld) table.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploy.calibration import calibration_of, calibration_warnings, format_calibration
from training.evaluate import EvaluationResult, FileResult, format_metrics
from training.metrics import curve_points, reliability, threshold_curves
from training.summary import summary_facts, summary_paragraph
from training.trust import class_counts, degenerate_flags, overlap_warnings, provenance

WORST_ERRORS_SHOWN = 6  # window timelines drawn for the most confidently wrong files
WELD_PREFIX = "WELD_"  # weld-mode keys in metrics.txt and on stdout


def worst_errors(result: EvaluationResult, n: int = WORST_ERRORS_SHOWN) -> list[FileResult]:
    """Misjudged files, the most confidently wrong (furthest past the threshold) first."""
    return _worst(result.judged, float(result.model["threshold"]), n)


def _worst(rows: Sequence[FileResult], threshold: float, n: int) -> list[FileResult]:
    wrong = [f for f in rows if f.judged and f.label != f.y_true]
    return sorted(wrong, key=lambda f: -abs(f.p_defect - threshold))[:n]


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _modes(result: EvaluationResult) -> list[tuple[str, str, list[FileResult], dict]]:
    """(name, file prefix, rows, metrics) of each mode that ran: weld mode first, since it
    is what the daemon judges."""
    out = []
    if result.weld_metrics:
        out.append((f"weld mode (segmentation {result.segmentation}: what the daemon judges)",
                    "weld_", result.welds, result.weld_metrics))  # fmt: skip
    if result.metrics:
        out.append(("file mode (whole recording, the artifact's forward)", "", result.files,
                    result.metrics))  # fmt: skip
    return out


def checks(result: EvaluationResult) -> dict[str, Any]:
    """Warnings and per-class counts of each mode (also stored in metrics.json)."""
    rows = result.files or result.welds
    out: dict[str, Any] = {"warnings": overlap_warnings(rows, result.metadata)}
    calibration = calibration_of(result.metadata)
    if calibration is not None:  # an ensemble's out-of-fold threshold: say how thin it is
        out["calibration"] = calibration
        out["warnings"] += [f"model calibration: {w}" for w in calibration_warnings(calibration)]
    for name, prefix, mode_rows, _ in _modes(result):
        out["warnings"] += [f"{name.split(' (')[0]}: {w}" for w in degenerate_flags(mode_rows)]
        out[f"{prefix}class_counts"] = class_counts(mode_rows)
    facts = summary_facts(result, out["warnings"])
    out["summary"] = facts.as_dict()
    out["summary_text"] = summary_paragraph(facts, result.segmentation)
    return out


def write_report(
    result: EvaluationResult,
    folder: Path,
    *,
    command: Sequence[str] | None = None,
    plots: bool = True,
) -> Path:
    """Write everything into `folder`; returns the HTML report's path. `command` is what is
    recorded as the command line (default: this process's); `plots=False` leaves the PNGs
    out (matplotlib is then never imported: the slowest part of a small report)."""
    folder.mkdir(parents=True, exist_ok=True)
    ran = [m for m, done in (("file", result.metrics), ("weld", result.weld_metrics)) if done]
    mode = "both" if len(ran) == 2 else ran[0]
    split = Path(result.split_file) if result.split_file else None
    prov = provenance(
        Path(result.data_root), split, result.model, result.metadata, mode,
        result.segmentation, command,
    )  # fmt: skip
    found = checks(result)
    for _, prefix, rows, _ in _modes(result):
        stem = "per_weld" if prefix else "per_file"
        _write_rows(rows, folder, stem)
    metrics = {k: _json_value(v) for k, v in result.metrics.items()}
    weld_metrics = {k: _json_value(v) for k, v in result.weld_metrics.items()}
    (folder / "metrics.json").write_text(
        json.dumps(
            {
                "provenance": prov,
                "model": result.model,
                "metrics": metrics,
                "weld_metrics": weld_metrics,
                **found,
            },
            indent=2,
        )
        + "\n"
    )
    lines = format_metrics(result.metrics) + format_metrics(result.weld_metrics, WELD_PREFIX)
    (folder / "metrics.txt").write_text("\n".join(lines) + "\n")
    sections = [
        _section(result, name, prefix, rows, m, found, folder, plots)
        for name, prefix, rows, m in _modes(result)
    ]
    return _html(result, folder, prov, found["warnings"], sections, found["summary_text"])


def _write_rows(rows: Sequence[FileResult], folder: Path, stem: str) -> None:
    table = [f.row() for f in rows]
    with (folder / f"{stem}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]) if table else ["file"])
        writer.writeheader()
        writer.writerows(table)
    detailed = [
        {**f.row(), "window_probs": [round(float(p), 6) for p in f.window_probs]} for f in rows
    ]
    (folder / f"{stem}.json").write_text(json.dumps(detailed, indent=1) + "\n")


def _plots(
    rows: Sequence[FileResult], m: dict, threshold: float, folder: Path, prefix: str
) -> dict[str, str]:
    from training import plots  # matplotlib: imported only when a report draws its plots

    ok = [f for f in rows if f.judged]
    y = np.array([f.y_true for f in ok], dtype=int)
    p = np.array([f.p_defect for f in ok], dtype=np.float64)
    figures: dict[str, str] = {}
    if len(ok):
        pts = curve_points(y, p)
        plots.roc_curve(pts["fpr"], pts["tpr"], float(m["ROC_AUC"]), folder / f"{prefix}roc.png")
        plots.pr_curve(
            pts["recall"],
            pts["precision"],
            float(m["PR_AUC"]),
            float(y.mean()),
            folder / f"{prefix}pr.png",
        )
        count, mean_p, rate = reliability(y, p)
        plots.reliability_diagram(
            count, mean_p, rate, float(m["ECE"]), folder / f"{prefix}reliability.png"
        )
        sweep = threshold_curves(y, p)
        plots.threshold_sweep(
            sweep["threshold"],
            sweep["precision"],
            sweep["recall"],
            sweep["false_alarm"],
            threshold,
            folder / f"{prefix}threshold.png",
        )
        figures.update(
            roc=f"{prefix}roc.png",
            pr=f"{prefix}pr.png",
            reliability=f"{prefix}reliability.png",
            **{"threshold vs precision/recall": f"{prefix}threshold.png"},
        )
    plots.confusion_matrix(
        int(m["TP"]), int(m["FP"]), int(m["TN"]), int(m["FN"]), folder / f"{prefix}confusion.png"
    )
    figures["confusion"] = f"{prefix}confusion.png"
    worst = _worst(rows, threshold, WORST_ERRORS_SHOWN)
    if worst:
        items = [(f"{_name(f)} ({f.label_name})", f.window_probs, f.p_defect) for f in worst]
        plots.window_timelines(items, threshold, folder / f"{prefix}worst_errors.png")
        figures["worst errors: window probabilities"] = f"{prefix}worst_errors.png"
    return figures


def _name(f: FileResult) -> str:
    return f.run_id if f.weld < 0 else f"{f.run_id} weld {f.weld}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(
    result: EvaluationResult,
    name: str,
    prefix: str,
    rows: Sequence[FileResult],
    m: dict,
    found: dict[str, Any],
    folder: Path,
    plots: bool = True,
) -> str:
    esc = html.escape
    threshold = float(result.model["threshold"])
    figures = _plots(rows, m, threshold, folder, prefix) if plots else {}
    metric_rows = [line.split("=", 1) for line in format_metrics(m)]
    counts = [
        [
            c["label"],
            c["n"],
            c["folders"],
            c["called_defect"],
            f"{c['correct']}/{c['n']}",
            f"{c['rate_is']} {c['rate']:.2f} [{c['rate_low']:.2f}, {c['rate_high']:.2f}]",
        ]
        for c in found[f"{prefix}class_counts"]
    ]
    imgs = "".join(
        f'<figure><img src="{esc(src)}" alt="{esc(n)}"><figcaption>{esc(n)}</figcaption></figure>'
        for n, src in figures.items()
    )
    weld_cols = ["weld", "start s", "end s", "segmentation"] if prefix else []
    per_row = [
        [
            f.run_id,
            f.config_folder,
            f.label_name,
            *([f.weld, f"{f.start_s:.2f}", f"{f.end_s:.2f}", f.segmentation] if prefix else []),
            f.n_windows,
            "" if f.error else f"{f.p_defect:.4f}",
            "" if not f.judged else ("defect" if f.label else "good_weld"),
            "" if not f.judged else ("yes" if f.label == f.y_true else "NO"),
            f.flag or f.error,
        ]
        for f in rows
    ]
    csv_name = "per_weld.csv" if prefix else "per_file.csv"
    json_name = "per_weld.json" if prefix else "per_file.json"
    return f"""<h2>{esc(name)}</h2>
<h3>Figures</h3>{_table(["key", "value"], metric_rows)}
<h3>Per class (95 % Wilson intervals; few recordings: read the interval)</h3>
{_table(["label", "n", "config folders", "called defect", "correct", "rate"], counts)}
<h3>Plots</h3>{imgs or "<p>not drawn (--no-plots)</p>"}
<h3>Every {"weld" if prefix else "file"} ({len(rows)})</h3>
<p><a href="{csv_name}">{csv_name}</a>, <a href="{json_name}">{json_name}</a>
(with window probabilities).</p>
{_table(["run", "config folder", "true label", *weld_cols, "windows", "p_defect",
         "verdict", "correct", "flag / error"], per_row)}"""  # fmt: skip


def _calibration_html(metadata: dict[str, Any]) -> str:
    """The artifact's out-of-fold calibration (an ensemble's), as the training run printed it."""
    calibration = calibration_of(metadata)
    if calibration is None:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in format_calibration(calibration))
    return (
        "<h2>Calibration (out of fold, from training)</h2>"
        "<p>The threshold was tuned on every training weld, each scored by the ensemble "
        "member that never saw its config folder; figures on the training data, not on the "
        f"data of this report.</p><ul>{items}</ul>"
    )


def _html(
    result: EvaluationResult,
    folder: Path,
    prov: dict[str, Any],
    warnings: list[str],
    sections: list[str],
    summary: str,
) -> Path:
    esc = html.escape
    warn = (
        "".join(f'<li class="warn">{esc(w)}</li>' for w in warnings)
        if warnings
        else "<li>none: no overlap with the artifact's training folders, no degenerate flag</li>"
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>weldmon evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:4px 0}}
td,th{{border:1px solid #ccc;padding:2px 8px}}figure{{display:inline-block;margin:8px}}
.warn{{color:#a00;font-weight:bold}}.summary{{font-size:1.15em;max-width:60em}}</style></head>
<body><h1>weldmon evaluation</h1>
<p id="summary" class="summary">{esc(summary)}</p>
<h2>Provenance</h2>{_table(["", ""], [[k, v] for k, v in prov.items()])}
<h2>Warnings</h2><ul>{warn}</ul>
<h2>Model</h2>{_table(["", ""], [[k, v] for k, v in result.model.items()])}
{_calibration_html(result.metadata)}
<p><a href="metrics.json">metrics.json</a>, <a href="metrics.txt">metrics.txt</a></p>
{"".join(sections)}
</body></html>
"""
    out = folder / "report.html"
    out.write_text(page)
    return out
