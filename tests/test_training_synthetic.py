"""The synthetic dataset generator: laid out like the real one, deterministic, learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from deploy.audio import read_recording
from training.config import load_config
from training.dataset import index_dataset
from training.synthetic import TINY_CONFIG_NAME, generate_synthetic_dataset, main
from training.welds import find_welds


def test_layout_indexes_like_the_real_dataset(tmp_path: Path) -> None:
    runs = generate_synthetic_dataset(tmp_path, configs_per_class=2, runs_per_config=2)
    index = index_dataset(tmp_path)
    assert len(index.entries) == len(runs) == 8 and index.report.bad == []
    assert sum(e.is_defect for e in index.entries) == 4
    info = sf.info(str(runs[0].path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert (tmp_path / "manifest.csv").read_text().count("\n") == 9


def test_same_seed_writes_the_same_audio(tmp_path: Path) -> None:
    a = generate_synthetic_dataset(tmp_path / "a", configs_per_class=1, runs_per_config=2)
    b = generate_synthetic_dataset(tmp_path / "b", configs_per_class=1, runs_per_config=2)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(sf.read(x.path)[0], sf.read(y.path)[0])


def test_defect_welds_are_burstier_than_good_welds(tmp_path: Path) -> None:
    runs = generate_synthetic_dataset(tmp_path, configs_per_class=2, runs_per_config=2)

    def crest(path: Path) -> float:
        x = sf.read(path)[0]
        return float(np.max(np.abs(x)) / np.sqrt(np.mean(x**2)))

    good = [crest(r.path) for r in runs if r.label_code == "00"]
    defect = [crest(r.path) for r in runs if r.label_code != "00"]
    assert min(defect) > max(good)


def test_command_line_writes_a_tiny_config_that_loads(tmp_path: Path) -> None:
    assert main([str(tmp_path / "d"), "--configs-per-class", "2", "--runs-per-config", "1"]) == 0
    cfg = load_config(tmp_path / "d" / TINY_CONFIG_NAME)
    assert Path(cfg.data_root) == (tmp_path / "d").resolve() and cfg.epochs <= 3


def test_with_idle_the_tiny_config_segments_one_weld_in_every_recording(tmp_path: Path) -> None:
    out = tmp_path / "d"
    args = [
        "--configs-per-class",
        "1",
        "--runs-per-config",
        "2",
        "--duration",
        "8",
        "--idle",
        "1.5",
    ]
    assert main([str(out), *args]) == 0
    cfg = load_config(out / TINY_CONFIG_NAME)
    recordings = sorted(out.rglob("*.flac"))
    assert len(recordings) >= 4
    for path in recordings:
        mono = read_recording(path, cfg.sample_rate).samples[0]
        assert len(find_welds(path, mono, cfg.sample_rate, cfg.segmentation)) == 1, path
