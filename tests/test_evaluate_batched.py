"""`weldmon evaluate`'s fast path: one batched pass per file gives `predict`'s verdicts, and
`--no-plots` reports without matplotlib (nor torch, on the ONNX twin)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deploy.audio import read_recording
from deploy.loader import load_artifact
from deploy.windows import mix_channels
from tests.support.artifacts import export_untrained
from tests.support.data import link_subset
from training.dataset import index_dataset
from training.evaluate import WORKER_THREADS, judge_files

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def twin_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported `.pt` with its ONNX twin beside it: what evaluate runs by default."""
    return export_untrained(tmp_path_factory.mktemp("twin"), onnx=True).path


@pytest.mark.real_data
def test_one_pass_per_file_gives_predicts_verdict_for_the_file_and_each_weld(
    twin_pt: Path, weld_audio_dir: Path
) -> None:
    # Real runs with their sensor logs: welds cut by the arc current, not aligned to windows.
    entries = index_dataset(weld_audio_dir).entries[:3]
    model = load_artifact(twin_pt, threads=WORKER_THREADS)  # as each of evaluate's workers
    assert model.backend == "onnx"
    judged = list(judge_files(twin_pt, entries, workers=2, mode="both"))
    assert [j.file.path for j in judged if j.file] == [str(e.path) for e in entries]
    for one in judged:
        samples = read_recording(Path(one.file.path), model.sample_rate).samples
        mono = mix_channels(samples)
        pairs = [(one.file, model.predict(samples))]
        assert one.welds and all(w.judged and w.segmentation == "current" for w in one.welds)
        for w in one.welds:
            start, end = round(w.start_s * model.sample_rate), round(w.end_s * model.sample_rate)
            pairs.append((w, model.predict(mono[None, start:end])))
        for row, verdict in pairs:
            assert (row.p_defect, row.label) == (verdict.p_defect, verdict.label), row.run_id
            assert np.array_equal(row.window_probs, verdict.window_probs), row.run_id


@pytest.mark.real_data
def test_no_plots_writes_the_numbers_and_html_without_matplotlib_or_torch(
    twin_pt: Path, recordings: list, tmp_path: Path
) -> None:
    link_subset(recordings, tmp_path / "data", folders_per_class=1, runs_per_class=1)
    report = tmp_path / "report"
    args = ["evaluate", "--model", str(twin_pt), "--data-root", str(tmp_path / "data"),
            "--report", str(report), "--no-plots"]  # fmt: skip
    # The command as the CLI runs it, then which heavy modules that process ever imported.
    code = (
        "import json, sys\nfrom weldmon.cli import main\n"
        f"rc = main({args!r})\n"
        "print(json.dumps([m for m in ('torch', 'matplotlib') if m in sys.modules]))\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert "TOTAL_FILES=2" in done.stdout and "WELD_TOTAL_WELDS=" in done.stdout
    assert not list(report.glob("*.png"))
    for name in ("per_file.csv", "per_weld.csv", "metrics.json", "metrics.txt"):
        assert (report / name).stat().st_size > 0
    html = (report / "report.html").read_text()
    assert "not drawn (--no-plots)" in html and "<img" not in html
