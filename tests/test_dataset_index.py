"""Dataset indexing and the data report: labels from run ids, bad files excluded with reasons."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deploy.frontend import FrontEndParams
from training.dataset import DataReport, DatasetError, index_dataset
from training.features import FeatureStore
from training.synthetic import generate_synthetic_dataset

RATE = 16000


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    generate_synthetic_dataset(
        tmp_path / "data", configs_per_class=2, runs_per_config=2, duration_s=2.0
    )
    return tmp_path / "data"


def _run_path(root: Path, top: str, folder: str, run_id: str) -> Path:
    path = root / top / folder / run_id / f"{run_id}.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_labels_come_from_the_run_id_suffix(synthetic_root: Path) -> None:
    index = index_dataset(synthetic_root)
    assert len(index.entries) == 8
    for e in index.entries:
        assert e.label_code == e.run_id[-2:]
        assert e.is_defect == (e.top_folder == "defect_data_weld")
    assert {e.label_name for e in index.entries if e.is_defect} == {"burn_through", "overlap"}
    assert index.report.bad == []


def test_multiclass_indices_are_distinct_per_label(synthetic_root: Path) -> None:
    index = index_dataset(synthetic_root)
    by_code = {e.label_code: e.class_index for e in index.entries}
    assert len(set(by_code.values())) == len(by_code) == 3


def test_bad_files_are_excluded_with_a_reason_and_never_crash(synthetic_root: Path) -> None:
    good = "good_weld_synthetic_1_01-01-24"
    (synthetic_root / "good_weld" / good / "01-01-24-0900-00").mkdir()  # run folder, no audio
    _run_path(synthetic_root, "good_weld", good, "01-01-24-0901-00").write_bytes(b"not audio")
    _run_path(synthetic_root, "good_weld", good, "01-01-24-0902-00").write_bytes(b"")
    sf.write(_run_path(synthetic_root, "good_weld", good, "01-01-24-0903-00"), np.zeros(800), RATE)
    sf.write(
        _run_path(synthetic_root, "good_weld", good, "01-01-24-0904-00"), np.zeros(48000), 48000
    )
    sf.write(_run_path(synthetic_root, "good_weld", good, "01-01-24-0905-99"), np.zeros(RATE), RATE)
    sf.write(_run_path(synthetic_root, "good_weld", good, "01-01-24-0906-02"), np.zeros(RATE), RATE)
    index = index_dataset(synthetic_root)
    reasons = {Path(b.path).stem: b.reason for b in index.report.bad}
    assert len(index.entries) == 8
    assert "missing" in reasons["01-01-24-0900-00"]
    assert "unreadable" in reasons["01-01-24-0901-00"]
    assert "unreadable" in reasons["01-01-24-0902-00"] or "empty" in reasons["01-01-24-0902-00"]
    assert "shorter than one window" in reasons["01-01-24-0903-00"]
    assert "wrong sample rate 48000" in reasons["01-01-24-0904-00"]
    assert "unknown label code" in reasons["01-01-24-0905-99"]
    assert "under good_weld" in reasons["01-01-24-0906-02"]


def test_nan_audio_is_caught_at_decode_and_reported(synthetic_root: Path) -> None:
    folder = "good_weld_synthetic_1_01-01-24"
    bad = _run_path(synthetic_root, "good_weld", folder, "01-01-24-0907-00")
    samples = np.zeros(2 * RATE, dtype=np.float32)
    samples[100] = np.nan
    # FLAC cannot hold NaN; libsndfile reads by content, so a float WAV named .flac carries it.
    sf.write(bad, samples, RATE, format="WAV", subtype="FLOAT")
    index = index_dataset(synthetic_root)
    report = DataReport(str(synthetic_root))
    bags = FeatureStore(FrontEndParams(), RATE).bags(index.entries, report)
    assert len(bags) == 8
    assert [Path(b.path).stem for b in report.bad] == ["01-01-24-0907-00"]
    assert "NaN" in report.bad[0].reason


def test_data_report_is_written_as_json_and_csv(synthetic_root: Path, tmp_path: Path) -> None:
    shutil.rmtree(next((synthetic_root / "good_weld").iterdir()) / "01-01-24-0001-00")
    (synthetic_root / "good_weld" / "good_weld_synthetic_1_01-01-24" / "01-01-24-0001-00").mkdir()
    index = index_dataset(synthetic_root)
    out = index.report.write(tmp_path / "report")
    assert '"n_excluded": 1' in out.read_text()
    assert "missing audio file" in (tmp_path / "report" / "data_report.csv").read_text()


def test_a_root_without_labelled_trees_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="good_weld"):
        index_dataset(tmp_path)


@pytest.mark.real_data
def test_real_recordings_index_completely(weld_audio_dir: Path, recordings: list) -> None:
    index = index_dataset(weld_audio_dir)
    assert index.report.bad == []
    assert {e.run_id: e.label_code for e in index.entries} == {
        r.run_id: r.label_code for r in recordings
    }
    assert {e.config_folder for e in index.entries} == {r.config_folder for r in recordings}
