"""The demo's closing table: each weld's truth beside the monitor's verdict, by time overlap,
on a shift made by `scripts/make_demo_shift.py` and judged by `weldmon replay`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.artifacts import export_untrained
from training.synthetic import generate_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


table = _load("demo_table")


def _truth(*spans: tuple[float, float, str]) -> list:
    return [table.TruthWeld(i + 1, a, b, label) for i, (a, b, label) in enumerate(spans)]


def _verdict(start: float, end: float, label: str, aligned: bool = False):
    return table.Verdict(start, end, label, 0.9 if label == "defect" else 0.1, aligned)


TRUTH = _truth((4, 14, "good_weld"), (18, 28, "defect"), (40, 50, "good_weld"))


def test_unaligned_results_are_matched_by_the_shift_that_pairs_the_most() -> None:
    # Times relative to the first result, which is weld 2's: weld 1 was missed. Only the
    # shift of 18 s pairs both (4 s would put the second result in no weld).
    verdicts = [_verdict(0.0, 7.0, "defect"), _verdict(24.0, 30.0, "defect")]
    rows = table.table_rows(TRUTH, verdicts)
    assert [(r.weld, r.truth, r.verdict) for r in rows] == [
        ("1", "good_weld", table.MISSED),
        ("2", "defect", "defect"),
        ("3", "good_weld", "defect"),
    ]
    assert [r.agrees for r in rows] == [False, True, False]


def test_a_detection_of_no_weld_gets_its_own_row() -> None:
    verdicts = [
        _verdict(5.0, 12.0, "good_weld", aligned=True),
        _verdict(15.0, 16.0, "defect", aligned=True),  # between welds 1 and 2
        _verdict(19.0, 27.0, "defect", aligned=True),
        _verdict(41.0, 49.0, "good_weld", aligned=True),
    ]
    rows = table.table_rows(TRUTH, verdicts)
    assert [r.verdict for r in rows[:3]] == ["good_weld", "defect", "good_weld"]
    assert rows[3].weld == "-" and rows[3].truth == "(no weld)" and rows[3].at_s == 15.0
    text = table.format_table(rows)
    assert "3/3 welds judged as labelled" in text and "not its accuracy" in text


def test_the_demo_shift_replayed_gives_one_row_per_weld_with_replays_verdicts(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    generate_synthetic_dataset(data)
    shift = tmp_path / "shift.flac"
    made = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "make_demo_shift.py"),
            str(data),
            str(shift),
            "--welds",
            "4",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert made.stdout.count("weld ") == 4
    truth = table.read_truth(shift.with_suffix(".truth.csv"))
    assert [t.label for t in truth] == ["good_weld", "defect", "good_weld", "defect"]
    artifact = export_untrained(tmp_path / "artifact").path
    config = tmp_path / "monitor.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(artifact)},
                "segmentation": {"mode": "gate"},
                "mqtt": {"enabled": False},
                "state_dir": str(tmp_path),
                "logging": {"level": "error"},
            }
        )
    )
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "weldmon.cli",
            "replay",
            "--config",
            str(config),
            "--no-progress",
            str(shift),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=300,
    )
    results = tmp_path / "results.jsonl"
    results.write_text(replay.stdout)
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "demo_table.py"),
            str(shift.with_suffix(".truth.csv")),
            str(results),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    verdicts = table.read_results(results)
    assert len(verdicts) == 4, replay.stdout
    rows = table.table_rows(truth, verdicts)
    assert [r.weld for r in rows] == ["1", "2", "3", "4"]  # none missed, nothing extra
    assert [r.verdict for r in rows] == [v.label for v in verdicts]
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["weld", "at", "(s)", "truth", "verdict", "p_defect"]
    assert len(lines) == 1 + 4 + 1
