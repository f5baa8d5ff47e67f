"""`weldmon predict` and `weldmon scan` as a user runs them (real subprocesses, real files)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deploy.audio import read_recording
from deploy.loader import load_artifact
from tests.support.artifacts import export_untrained


def weldmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", *args], capture_output=True, text=True, timeout=300
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return export_untrained(tmp_path_factory.mktemp("cli-artifact")).path


@pytest.fixture(scope="module")
def real_file(recordings) -> Path:
    return recordings[0].flac


def test_help_lists_every_subcommand_without_importing_torch():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "weldmon.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    for name in ("predict", "scan", "train", "export", "evaluate", "run", "replay", "devices"):
        assert name in out.stdout
    assert " torch" not in out.stderr  # -X importtime lists every imported module on stderr


@pytest.mark.real_data
def test_predict_mode_a_prints_one_json_object_matching_forward(artifact, real_file):
    out = weldmon("predict", "--model", str(artifact), str(real_file))
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    model = load_artifact(artifact)
    label, p = model.forward(read_recording(real_file, 16000).samples)
    assert record["mode"] == "recording"
    assert record["label"] == label and abs(record["p_defect"] - p) <= 1e-5
    assert record["label_name"] == ["good_weld", "defect"][label]
    assert record["n_windows"] == 38
    assert record["threshold"] == 0.5
    assert record["model_sha256"] == model.sha256
    assert record["file"] == str(real_file)


@pytest.mark.real_data
def test_predict_mode_b_equals_the_artifacts_window_probability(artifact, real_file):
    out = weldmon("predict", "--model", str(artifact), str(real_file), "--window-start", "12.5")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    model = load_artifact(artifact)
    samples = read_recording(real_file, 16000).samples
    window = samples[:, 200000:216000]  # 12.5 s at 16 kHz
    label, p = model.forward(window)  # the artifact judging exactly one window
    p_window = float(model.window_probs(window)[0])
    assert record["mode"] == "window" and record["n_windows"] == 1
    assert abs(record["p_defect"] - p) <= 1e-5 and abs(record["p_defect"] - p_window) <= 1e-5
    assert record["label"] == label


@pytest.mark.real_data
def test_predict_resamples_multichannel_44k1_audio_and_says_so(artifact, recordings, tmp_path):
    a = read_recording(recordings[0].flac, 44100).samples[0]
    b = read_recording(recordings[1].flac, 44100).samples[0]
    n = min(a.size, b.size)
    stereo = tmp_path / "stereo44k.wav"
    sf.write(stereo, np.stack([a[:n], b[:n]], axis=1), 44100, subtype="FLOAT")
    out = weldmon("predict", "--model", str(artifact), str(stereo))
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["resampled"] is True and record["source_sample_rate"] == 44100
    assert record["channels"] == 2
    model = load_artifact(artifact)
    _, p = model.forward(read_recording(stereo, 16000).samples)
    assert abs(record["p_defect"] - p) <= 1e-5


def test_predict_on_a_missing_model_exits_2_with_a_clear_message(tmp_path):
    out = weldmon("predict", "--model", str(tmp_path / "nope.pt"), str(tmp_path / "x.flac"))
    assert out.returncode == 2
    assert "nope.pt: no such file" in out.stderr


def test_predict_window_past_the_end_is_an_error_not_a_crash(artifact, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(24000, dtype=np.float32), 16000)
    out = weldmon("predict", "--model", str(artifact), str(short), "--window-start", "1.0")
    assert out.returncode == 1
    assert "ends after the audio" in out.stderr
    assert "Traceback" not in out.stderr


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(8000, dtype=np.float32), 16000)
    nan = tmp_path / "nan.wav"
    data = np.zeros(32000, dtype=np.float32)
    data[100] = np.nan
    sf.write(nan, data, 16000, subtype="FLOAT")
    return {
        "missing": tmp_path / "missing.flac",
        "corrupt": corrupt,
        "empty": empty,
        "short": short,
        "nan": nan,
    }


@pytest.mark.real_data
def test_scan_writes_rows_for_every_window_and_error_rows_for_bad_files(
    artifact, real_file, tmp_path
):
    bad = _bad_files(tmp_path)
    out_dir = tmp_path / "scan"
    files = [str(real_file), *map(str, bad.values())]
    out = weldmon("scan", "--model", str(artifact), "--out", str(out_dir), *files)
    assert out.returncode == 1  # some files failed, but the scan went on
    rows = read_csv(out_dir / "deploy_window_scan_results.csv")
    windows = [r for r in rows if r["file"] == str(real_file) and r["mode"] == "window"]
    assert len(windows) == 38
    errors = {Path(r["file"]).stem: r["error"] for r in rows if r["status"] == "error"}
    assert set(errors) == set(bad)
    assert "no such file" in errors["missing"]
    assert "unreadable or not audio" in errors["corrupt"]
    assert "empty" in errors["empty"]
    assert "shorter than one window" in errors["short"]
    assert "NaN" in errors["nan"]
    summary = json.loads((out_dir / "deploy_window_scan_results.json").read_text())
    assert summary["files_ok"] == 1 and summary["files_failed"] == len(bad)
    model = load_artifact(artifact)
    probs = model.window_probs(read_recording(real_file, 16000).samples[0].reshape(38, 16000))
    got = np.array([float(r["p_defect"]) for r in windows])
    np.testing.assert_allclose(got, probs, atol=1e-5)


@pytest.mark.real_data
def test_scan_of_folders_scores_their_audio_and_reports_an_empty_one(
    artifact, recordings, tmp_path
):
    folder = recordings[0].flac.parent.parent  # a config folder: one subfolder per run
    expected = sorted(str(p) for p in folder.rglob("*.flac"))
    empty = tmp_path / "no_audio_here"
    empty.mkdir()
    (empty / "notes.txt").write_text("not audio")
    out_dir = tmp_path / "scan"
    out = weldmon(
        "scan", "--model", str(artifact), "--output", str(out_dir), str(folder), str(empty)
    )
    assert out.returncode == 1, out.stderr  # the empty folder is a failure, reported
    rows = read_csv(out_dir / "deploy_window_scan_results.csv")
    assert sorted({r["file"] for r in rows if r["status"] == "ok"}) == expected
    (error,) = [r for r in rows if r["status"] == "error"]
    assert error["file"] == str(empty) and "a folder with no audio files" in error["error"]
    assert "no_audio_here: a folder with no audio files" in out.stderr


@pytest.mark.real_data
def test_scan_at_given_offsets_scores_exactly_those_windows(artifact, real_file, tmp_path):
    out = weldmon(
        "scan",
        "--model",
        str(artifact),
        "--out",
        str(tmp_path),
        "--offsets",
        "0,7.25,30",
        str(real_file),
    )
    assert out.returncode == 0, out.stderr
    rows = read_csv(tmp_path / "deploy_window_scan_results.csv")
    starts = [float(r["window_start_s"]) for r in rows if r["mode"] == "window"]
    assert starts == [0.0, 7.25, 30.0]
    whole = [r for r in rows if r["mode"] == "recording"]
    assert len(whole) == 1 and int(whole[0]["n_windows"]) == 38
