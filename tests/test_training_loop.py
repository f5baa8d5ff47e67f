"""The MIL training loop on a tiny synthetic set: determinism, checkpoint selection, resume,
the decode-once data path and its equivalence with the artifact's own front end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deploy.audio import read_recording
from deploy.loader import load_artifact
from deploy.windows import cut_windows, mix_channels
from training.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    SNAPSHOT_FOLDER,
    CheckpointError,
    load_checkpoint,
)
from training.config import ConfigError, make_config
from training.dataset import DataReport, index_dataset
from training.export import classifier_from_checkpoint, export_checkpoint
from training.features import FeatureStore
from training.synthetic import generate_synthetic_dataset, tiny_config_values
from training.train import train, window_probs

torch.set_num_threads(1)


def _quiet(_: str) -> None:
    """Swallow the per-epoch lines."""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic_dataset(root)
    return root


@pytest.fixture(scope="module")
def runs(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three runs of one config: two straight through, one interrupted after epoch 2 and resumed."""
    cfg = make_config(tiny_config_values(data_root))
    out = tmp_path_factory.mktemp("runs")
    a = train(cfg, out / "a", progress=False, log=_quiet)
    b = train(cfg, out / "b", progress=False, log=_quiet)
    train(cfg, out / "c", progress=False, log=_quiet, stop_after_epoch=2)
    c_partial = load_checkpoint(out / "c" / LAST_NAME)
    c = train(cfg, out / "c", progress=False, log=_quiet, resume=True)
    return {"cfg": cfg, "a": a, "b": b, "c": c, "c_partial": c_partial, "out": out}


def _metrics(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_same_seed_and_data_give_the_same_metrics(runs: dict) -> None:
    assert len(runs["a"].history) == 3
    assert _metrics(runs["a"].history) == _metrics(runs["b"].history)


def test_training_learns_the_synthetic_defects(runs: dict) -> None:
    history = runs["a"].history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_roc_auc"] for h in history) == 1.0


def test_resume_continues_to_the_same_result_as_an_uninterrupted_run(runs: dict) -> None:
    assert runs["c_partial"]["epoch"] == 2
    assert _metrics(runs["c"].history) == _metrics(runs["a"].history)
    a = load_checkpoint(runs["a"].run_dir / LAST_NAME)["model_state"]
    c = load_checkpoint(runs["c"].run_dir / LAST_NAME)["model_state"]
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_best_checkpoint_has_the_highest_macro_f1_then_the_lowest_validation_loss(
    runs: dict,
) -> None:
    history = runs["a"].history
    top = max(h["val_macro_f1"] for h in history)
    at_top = [h for h in history if h["val_macro_f1"] == top]
    best_loss = min(h["val_loss"] for h in at_top)
    expected = next(h["epoch"] for h in at_top if h["val_loss"] == best_loss)
    assert load_checkpoint(runs["a"].run_dir / BEST_NAME)["epoch"] == expected
    assert load_checkpoint(runs["a"].run_dir / LAST_NAME)["epoch"] == 3


def test_a_snapshot_is_written_on_each_improvement_only(runs: dict) -> None:
    snaps = sorted((runs["a"].run_dir / SNAPSHOT_FOLDER).iterdir())
    improved = [h for h in runs["a"].history if h["best"]]
    assert len(snaps) == len(improved)
    for snap, h in zip(snaps, improved, strict=True):
        assert f"_ep{h['epoch']:03d}_f1_{h['val_macro_f1']:.4f}_vl_{h['val_loss']:.4f}" in snap.name
        assert load_checkpoint(snap / "model.pt")["epoch"] == h["epoch"]


def test_checkpoint_carries_what_export_and_resume_need(runs: dict) -> None:
    ckpt = load_checkpoint(runs["a"].run_dir / BEST_NAME)  # weights_only=True inside
    assert ckpt["label_map"] == {"good_weld": 0, "defect": 1}
    assert ckpt["frontend"]["n_mels"] == 40 and ckpt["model_params"]["n_classes"] == 2
    assert ckpt["config"] == runs["cfg"].model_dump()
    assert 0.05 <= ckpt["threshold"] <= 0.95
    assert {"model_state", "optimizer_state", "metrics", "rng", "split"} <= set(ckpt)


def test_run_folder_holds_config_history_curves_split_and_data_report(runs: dict) -> None:
    run = runs["a"].run_dir
    assert json.loads((run / "config.json").read_text()) == runs["cfg"].model_dump()
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,val_loss,val_macro_f1") and len(lines) == 4
    assert (run / "curves.png").stat().st_size > 0
    assert json.loads((run / "split.json").read_text())["val_folders"]
    assert json.loads((run / "data_report.json").read_text())["n_excluded"] == 0


def test_resume_with_a_changed_recipe_is_refused(runs: dict) -> None:
    changed = runs["cfg"].model_copy(update={"lr": 0.5})
    with pytest.raises(ConfigError, match="lr"):
        train(changed, runs["a"].run_dir, resume=True, progress=False, log=_quiet)


def test_a_non_checkpoint_file_is_refused(tmp_path: Path) -> None:
    torch.save({"something": 1}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a weldmon training checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    (tmp_path / "y.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "y.pt")


def test_each_file_is_decoded_once_per_store(data_root: Path, tmp_path: Path) -> None:
    cfg = make_config(tiny_config_values(data_root))
    entries = index_dataset(data_root).entries
    store = FeatureStore(cfg.frontend(), cfg.chunk_samples)
    store.bags(entries, DataReport(""))
    store.bags(entries, DataReport(""))
    assert store.decodes == len(entries)


def test_disk_cache_is_reused_across_stores_and_keyed_by_front_end(
    data_root: Path, tmp_path: Path
) -> None:
    cfg = make_config(tiny_config_values(data_root))
    entries = index_dataset(data_root).entries[:2]
    first = FeatureStore(cfg.frontend(), cfg.chunk_samples, tmp_path / "cache")
    feats = [first.features(e) for e in entries]
    second = FeatureStore(cfg.frontend(), cfg.chunk_samples, tmp_path / "cache")
    assert all(torch.equal(f, second.features(e)) for f, e in zip(feats, entries, strict=True))
    assert second.decodes == 0
    other = make_config({**tiny_config_values(data_root), "n_mels": 32})
    third = FeatureStore(other.frontend(), other.chunk_samples, tmp_path / "cache")
    assert third.features(entries[0]).shape[2] == 32 and third.decodes == 1


def test_cached_features_give_the_exported_artifacts_window_probabilities(
    runs: dict, data_root: Path, tmp_path: Path
) -> None:
    ckpt_path = runs["a"].run_dir / BEST_NAME
    backbone = classifier_from_checkpoint(load_checkpoint(ckpt_path)).backbone
    artifact = load_artifact(export_checkpoint(ckpt_path, tmp_path / "m.pt").path)
    entry = index_dataset(data_root).entries[-1]
    store = FeatureStore(runs["cfg"].frontend(), runs["cfg"].chunk_samples)
    with torch.no_grad():
        from_cache = window_probs(backbone, store.features(entry)).numpy()
    rec = read_recording(entry.path, 16000)
    raw = cut_windows(mix_channels(torch.from_numpy(rec.samples)), artifact.chunk_samples)
    assert from_cache == pytest.approx(artifact.window_probs(raw), abs=1e-6)
