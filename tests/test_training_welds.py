"""Weld boundaries for training and evaluation, and windows sliced from a weld's frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from deploy.audio import read_recording
from deploy.frontend import FrontEndParams, LogMel
from deploy.windows import cut_windows
from training.dataset import DataReport, index_dataset
from training.features import FeatureStore, slice_windows
from training.synthetic import generate_synthetic_dataset
from training.welds import WeldSegmentationError, find_welds

torch.set_num_threads(1)
RATE = 16000
HEADER = (
    "Date,Time,Part No,Pressure,CO2 Weld Flow,Feed,Primary Weld Current,Wire Consumed,"
    "Secondary Weld Voltage,Remarks "
)


def _idle_set(root: Path) -> list:
    return generate_synthetic_dataset(
        root, configs_per_class=1, runs_per_config=2, duration_s=8.0, idle_s=1.5
    )


def _write_log(path: Path, on_s: float, off_s: float, total_s: float) -> None:
    rows = [HEADER]
    for i in range(round(total_s / 0.1)):
        t = i * 0.1
        amps = 160.0 if on_s <= t < off_s else 0.0
        rows.append(f"01/01/2024,10:00:{t:06.3f},x,2.5,0.02,0.26,{amps:.1f},10.0,20.0")
    path.write_text("\n".join(rows) + "\n")


def test_auto_uses_the_gate_without_a_sensor_log_and_finds_the_arc(tmp_path: Path) -> None:
    runs = _idle_set(tmp_path)
    for run in runs:
        mono = read_recording(run.path, RATE).samples[0]
        (weld,) = find_welds(run.path, mono, RATE, "auto")
        assert weld.source == "gate"
        loud = np.flatnonzero(np.abs(mono) > 0.05)  # the arc's samples (idle is ~1e-3 RMS)
        assert abs(weld.start - loud[0]) < 0.3 * RATE and abs(weld.end - loud[-1]) < 0.6 * RATE


def test_auto_prefers_the_sensor_logs_arc_current(tmp_path: Path) -> None:
    run = _idle_set(tmp_path)[0]
    mono = read_recording(run.path, RATE).samples[0]
    loud = np.flatnonzero(np.abs(mono) > 0.05)
    on_s, off_s = loud[0] / RATE, loud[-1] / RATE
    _write_log(run.path.with_suffix(".csv"), on_s, off_s, 8.0)
    (weld,) = find_welds(run.path, mono, RATE, "auto")
    assert weld.source == "current"
    assert weld.start / RATE == pytest.approx(on_s, abs=0.15)
    assert weld.end / RATE == pytest.approx(off_s, abs=0.15)


def test_a_broken_sensor_log_falls_back_to_the_gate_and_says_so(tmp_path: Path) -> None:
    run = _idle_set(tmp_path)[0]
    run.path.with_suffix(".csv").write_text("not,a,sensor,log\n")
    mono = read_recording(run.path, RATE).samples[0]
    (weld,) = find_welds(run.path, mono, RATE, "auto")
    assert weld.source == "gate" and "sensor log unusable" in weld.note
    with pytest.raises(WeldSegmentationError, match="missing column"):
        find_welds(run.path, mono, RATE, "current")


def test_file_mode_is_the_whole_recording(tmp_path: Path) -> None:
    run = _idle_set(tmp_path)[0]
    mono = read_recording(run.path, RATE).samples[0]
    assert [(w.start, w.end, w.source) for w in find_welds(run.path, mono, RATE, "file")] == [
        (0, mono.size, "file")
    ]


def test_windows_sliced_from_a_welds_frames_equal_the_artifacts_front_end(tmp_path: Path) -> None:
    runs = _idle_set(tmp_path)
    store = FeatureStore(FrontEndParams(), RATE, segmentation="gate")
    logmel = LogMel(FrontEndParams())
    for bag in store.bags(index_dataset(tmp_path).entries, DataReport("")):
        mono = read_recording(bag.entry.path, RATE).samples[0]
        weld = torch.from_numpy(mono[bag.weld.start : bag.weld.end].copy())
        expected = logmel(cut_windows(weld, RATE))
        assert bag.n_windows == weld.numel() // RATE >= 3
        assert torch.equal(bag.features, expected)
    assert len(runs) == 4


def test_slicing_never_counts_a_window_the_audio_does_not_hold() -> None:
    frames = torch.arange(40 * 97, dtype=torch.float32).reshape(40, 97)
    # 97 frames would fit two 47-frame windows every 50, but the audio holds one whole window.
    assert slice_windows(frames, 50, 47, n_windows=1).shape == (1, 40, 47)
    assert slice_windows(frames, 50, 47, n_windows=5).shape == (2, 40, 47)
    assert torch.equal(slice_windows(frames, 50, 47, 2)[1], frames[:, 50:97])
    assert slice_windows(frames, 50, 47, 5, offset=10).shape == (1, 40, 47)


def test_a_recording_without_a_weld_is_reported_not_trained_on(tmp_path: Path) -> None:
    _idle_set(tmp_path)
    quiet = tmp_path / "good_weld" / "good_weld_synthetic_1_01-01-24" / "01-01-24-0099-00"
    quiet.mkdir()
    sf.write(quiet / "01-01-24-0099-00.flac", np.zeros(3 * RATE, dtype=np.float32) + 1e-4, RATE)
    report = DataReport("")
    bags = FeatureStore(FrontEndParams(), RATE, segmentation="gate").bags(
        index_dataset(tmp_path).entries, report
    )
    assert len(bags) == 4
    assert [b.run_id for b in report.bad] == ["01-01-24-0099-00"]
    assert "no weld found" in report.bad[0].reason
