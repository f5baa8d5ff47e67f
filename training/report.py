"""Write an evaluation to a folder: per-file CSV/JSON, metrics, plots and one HTML page."""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import numpy as np

from training import plots
from training.evaluate import EvaluationResult, FileResult, format_metrics
from training.metrics import curve_points, reliability

WORST_ERRORS_SHOWN = 6  # window timelines drawn for the most confidently wrong files


def worst_errors(result: EvaluationResult, n: int = WORST_ERRORS_SHOWN) -> list[FileResult]:
    """Misjudged files, the most confidently wrong (furthest past the threshold) first."""
    threshold = float(result.model["threshold"])
    wrong = [f for f in result.judged if f.label != f.y_true]
    return sorted(wrong, key=lambda f: -abs(f.p_defect - threshold))[:n]


def _json_value(v: float | int) -> float | int | None:
    return None if isinstance(v, float) and math.isnan(v) else v


def write_report(result: EvaluationResult, folder: Path) -> Path:
    """Write everything into `folder`; returns the HTML report's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f.row() for f in result.files]
    with (folder / "per_file.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    detailed = [
        {**f.row(), "window_probs": [round(float(p), 6) for p in f.window_probs]}
        for f in result.files
    ]
    (folder / "per_file.json").write_text(json.dumps(detailed, indent=1) + "\n")
    metrics = {k: _json_value(v) for k, v in result.metrics.items()}
    (folder / "metrics.json").write_text(
        json.dumps({"model": result.model, "metrics": metrics}, indent=2) + "\n"
    )
    (folder / "metrics.txt").write_text("\n".join(format_metrics(result.metrics)) + "\n")
    figures = _plots(result, folder)
    return _html(result, folder, figures)


def _plots(result: EvaluationResult, folder: Path) -> dict[str, str]:
    ok = result.judged
    m = result.metrics
    y = np.array([f.y_true for f in ok], dtype=int)
    p = np.array([f.p_defect for f in ok], dtype=np.float64)
    figures: dict[str, str] = {}
    if len(ok):
        pts = curve_points(y, p)
        plots.roc_curve(pts["fpr"], pts["tpr"], float(m["ROC_AUC"]), folder / "roc.png")
        plots.pr_curve(
            pts["recall"], pts["precision"], float(m["PR_AUC"]), float(y.mean()), folder / "pr.png"
        )
        count, mean_p, rate = reliability(y, p)
        plots.reliability_diagram(count, mean_p, rate, float(m["ECE"]), folder / "reliability.png")
        figures.update(roc="roc.png", pr="pr.png", reliability="reliability.png")
    plots.confusion_matrix(
        int(m["TP"]), int(m["FP"]), int(m["TN"]), int(m["FN"]), folder / "confusion.png"
    )
    figures["confusion"] = "confusion.png"
    worst = worst_errors(result)
    if worst:
        items = [(f"{f.run_id} ({f.label_name})", f.window_probs, f.p_defect) for f in worst]
        plots.window_timelines(items, float(result.model["threshold"]), folder / "worst_errors.png")
        figures["worst errors: window probabilities"] = "worst_errors.png"
    return figures


def _html(result: EvaluationResult, folder: Path, figures: dict[str, str]) -> Path:
    esc = html.escape
    metric_rows = "".join(
        f"<tr><td>{esc(line.split('=')[0])}</td><td>{esc(line.split('=')[1])}</td></tr>"
        for line in format_metrics(result.metrics)
    )
    model_rows = "".join(
        f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>" for k, v in result.model.items()
    )
    imgs = "".join(
        f'<figure><img src="{esc(src)}" alt="{esc(name)}">'
        f"<figcaption>{esc(name)}</figcaption></figure>"
        for name, src in figures.items()
    )
    errors = "".join(
        f"<tr><td>{esc(f.path)}</td><td>{esc(f.error)}</td></tr>" for f in result.errors
    )
    worst = "".join(
        f"<tr><td>{esc(f.run_id)}</td><td>{esc(f.label_name)}</td><td>{f.p_defect:.4f}</td></tr>"
        for f in worst_errors(result)
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>weldmon evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td{{border:1px solid #ccc;padding:2px 8px}}figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>weldmon evaluation</h1>
<h2>Model</h2><table>{model_rows}</table>
<h2>Metrics</h2><table>{metric_rows}</table>
<p>Per-file results: <a href="per_file.csv">per_file.csv</a>,
<a href="per_file.json">per_file.json</a> (with window probabilities);
<a href="metrics.json">metrics.json</a>.</p>
<h2>Figures</h2>{imgs}
<h2>Worst errors</h2><table><tr><th>run</th><th>true label</th><th>p_defect</th></tr>{worst}</table>
<h2>Files that could not be judged ({len(result.errors)})</h2><table>{errors}</table>
</body></html>
"""
    out = folder / "report.html"
    out.write_text(page)
    return out
