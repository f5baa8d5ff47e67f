"""Splits by config folder: no folder on both sides, both classes held out, reproducible."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.dataset import index_dataset
from training.split import SplitError, make_split, read_split
from training.synthetic import generate_synthetic_dataset


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = tmp_path_factory.mktemp("split") / "data"
    generate_synthetic_dataset(root, configs_per_class=5, runs_per_config=2, duration_s=1.0)
    return index_dataset(root).entries


@pytest.mark.parametrize("seed", range(6))
def test_no_config_folder_is_on_both_sides(entries: list, seed: int) -> None:
    split = make_split(entries, seed=seed, val_fraction=0.3)
    assert not set(split.train_folders) & set(split.val_folders)
    assert set(split.train_folders) | set(split.val_folders) == {e.config_folder for e in entries}
    for e in entries:  # every run of a folder lands on its folder's side
        assert split.side(e) == ("val" if e.config_folder in split.val_folders else "train")


@pytest.mark.parametrize("seed", range(6))
def test_validation_holds_both_classes(entries: list, seed: int) -> None:
    split = make_split(entries, seed=seed, val_fraction=0.2)
    val_labels = {e.binary_label for e in entries if split.side(e) == "val"}
    train_labels = {e.binary_label for e in entries if split.side(e) == "train"}
    assert val_labels == train_labels == {0, 1}


def test_same_seed_gives_the_same_split_and_another_seed_may_not(entries: list) -> None:
    first = make_split(entries, seed=1, val_fraction=0.4)
    assert make_split(entries, seed=1, val_fraction=0.4) == first
    others = {make_split(entries, seed=s, val_fraction=0.4).val_folders for s in range(10)}
    assert len(others) > 1


def test_split_file_round_trips(entries: list, tmp_path: Path) -> None:
    split = make_split(entries, seed=3, val_fraction=0.4)
    assert read_split(split.write(tmp_path / "split.json")) == split


def test_split_file_with_a_folder_on_both_sides_is_refused(entries: list, tmp_path: Path) -> None:
    split = make_split(entries, seed=3, val_fraction=0.4)
    path = split.write(tmp_path / "split.json")
    path.write_text(path.read_text().replace(split.train_folders[0], split.val_folders[0]))
    with pytest.raises(SplitError, match="both sides"):
        read_split(path)


@pytest.mark.real_data
def test_real_recordings_split_with_both_classes_held_out(weld_audio_dir: Path) -> None:
    entries = index_dataset(weld_audio_dir).entries
    split = make_split(entries, seed=42, val_fraction=0.2)
    assert {e.binary_label for e in entries if split.side(e) == "val"} == {0, 1}
    assert not set(split.train_folders) & set(split.val_folders)
