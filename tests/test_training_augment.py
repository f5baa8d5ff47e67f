"""Session augmentation of weld frames, folder-balanced epochs and the defect-type head."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from deploy.frontend import FrontEndParams
from training.augment import Augmenter, AugmentParams
from training.config import ConfigError, make_config
from training.dataset import DataReport, index_dataset
from training.features import FeatureStore
from training.step import epoch_order
from training.synthetic import generate_synthetic_dataset, tiny_config_values
from training.train import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bags_and_store(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("augment")
    generate_synthetic_dataset(root, configs_per_class=2, runs_per_config=2, duration_s=6.0)
    store = FeatureStore(FrontEndParams(), 16000)
    return store.bags(index_dataset(root).entries, DataReport("")), store, root


def test_no_transform_gives_the_daemons_windows(bags_and_store) -> None:
    bags, store, _ = bags_and_store
    aug = Augmenter(AugmentParams(), store, bags, seed=0)
    assert all(torch.equal(aug.windows(b), b.features) for b in bags)


@pytest.mark.parametrize(
    "params",
    [
        AugmentParams(eq_db=6.0),
        AugmentParams(noise_p=1.0),
        AugmentParams(mix_p=1.0),
        AugmentParams(reverb_p=1.0),
        AugmentParams(time_mask=8, band_mask=6),
        AugmentParams(grid_shift=True),
    ],
)
def test_each_transform_changes_the_maps_and_keeps_their_shape(bags_and_store, params) -> None:
    bags, store, _ = bags_and_store
    aug = Augmenter(params, store, bags, seed=1)
    bag = bags[-1]
    out = [aug.windows(bag) for _ in range(4)]
    assert all(o.shape[1:] == bag.features.shape[1:] for o in out)
    assert all(torch.isfinite(o).all() for o in out)
    assert any(o.shape != bag.features.shape or not torch.equal(o, bag.features) for o in out)


def test_grid_shift_may_cost_the_last_window_never_adds_one(bags_and_store) -> None:
    bags, store, _ = bags_and_store
    aug = Augmenter(AugmentParams(grid_shift=True), store, bags, seed=2)
    counts = {aug.windows(bags[0]).shape[0] for _ in range(20)}
    assert counts <= {bags[0].n_windows - 1, bags[0].n_windows} and len(counts) == 2


def test_a_mix_never_borrows_from_the_bags_own_folder(bags_and_store) -> None:
    bags, store, _ = bags_and_store
    own = [b for b in bags if b.entry.config_folder == bags[0].entry.config_folder]
    aug = Augmenter(AugmentParams(mix_p=1.0), store, own, seed=3)
    assert torch.equal(aug.windows(bags[0]), bags[0].features)  # nothing else to mix in


def test_the_same_seed_draws_the_same_augmentation(bags_and_store) -> None:
    bags, store, _ = bags_and_store
    params = AugmentParams(grid_shift=True, eq_db=4, noise_p=0.5, mix_p=0.5, reverb_p=0.5)
    a = [Augmenter(params, store, bags, seed=9).windows(b) for b in bags]
    b = [Augmenter(params, store, bags, seed=9).windows(b) for b in bags]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_balanced_epochs_draw_every_folder_about_equally(bags_and_store) -> None:
    bags, _, _ = bags_and_store
    skewed = bags + [b for b in bags if b.entry.config_folder == bags[0].entry.config_folder] * 4
    gen = torch.Generator().manual_seed(0)
    drawn = Counter(
        skewed[i].entry.config_folder for _ in range(200) for i in epoch_order(skewed, True, gen)
    )
    share = min(drawn.values()) / max(drawn.values())
    assert len(drawn) == 4 and share > 0.85
    plain = epoch_order(skewed, False, gen)
    assert sorted(plain) == list(range(len(skewed)))


def test_training_with_every_option_runs_and_resumes_to_the_same_weights(
    bags_and_store, tmp_path: Path
) -> None:
    _, _, root = bags_and_store
    values = {
        **tiny_config_values(root),
        "epochs": 2,
        "width": 8,
        "input_norm": "band",
        "balance_folders": True,
        "type_head_weight": 0.3,
        "augment_grid_shift": True,
        "augment_eq_db": 4.0,
        "augment_noise_p": 0.5,
        "augment_mix_p": 0.5,
        "augment_reverb_p": 0.3,
        "specaugment_time": 6,
        "specaugment_bands": 4,
    }
    cfg = make_config(values)
    log = lambda _: None  # noqa: E731
    whole = train(cfg, tmp_path / "whole", progress=False, log=log)
    train(cfg, tmp_path / "half", stop_after_epoch=1, progress=False, log=log)
    resumed = train(cfg, tmp_path / "half", resume=True, progress=False, log=log)
    a = torch.load(whole.run_dir / "last_model.pt", weights_only=True)["model_state"]
    b = torch.load(resumed.run_dir / "last_model.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_contradictory_augmentation_ranges_are_config_errors(bags_and_store) -> None:
    _, _, root = bags_and_store
    with pytest.raises(ConfigError, match="augment_snr_min_db"):
        make_config({**tiny_config_values(root), "augment_snr_min_db": 40.0})
    with pytest.raises(ConfigError, match="input_norm"):
        make_config({**tiny_config_values(root), "input_norm": "median"})
