"""From a dataset root to training and validation bags: index, split, decode once, report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from deploy.errors import WeldmonError
from training.config import TrainConfig
from training.dataset import DataReport, index_dataset
from training.features import Bag, FeatureStore
from training.split import Split, make_split, read_split

SPLIT_NAME = "split.json"


class DataError(WeldmonError):
    """The data cannot train a model (no root given, a side without bags, one class only)."""


@dataclass
class TrainData:
    train: list[Bag]
    val: list[Bag]
    split: Split | None
    report: DataReport


def make_store(cfg: TrainConfig) -> FeatureStore:
    cache = Path(cfg.feature_cache_dir) if cfg.feature_cache_dir else None
    return FeatureStore(cfg.frontend(), cfg.chunk_samples, cache, cfg.segmentation)


def prepare_data(
    cfg: TrainConfig, run_dir: Path, *, store: FeatureStore | None = None, progress: bool = True
) -> TrainData:
    """Index `cfg.data_root`, split by config folder (or reuse `cfg.split_file`), decode every
    usable file once, and write `split.json` and `data_report.{json,csv}` into `run_dir`."""
    if not cfg.data_root:
        raise DataError("no data_root: set it in the config or pass --data-root")
    index = index_dataset(
        Path(cfg.data_root), sample_rate=cfg.sample_rate, chunk_samples=cfg.chunk_samples
    )
    if cfg.split_file:
        split = read_split(Path(cfg.split_file))
    else:
        split = make_split(index.entries, seed=cfg.seed, val_fraction=cfg.val_fraction)
    split.write(run_dir / SPLIT_NAME)
    sides: dict[str, list] = {"train": [], "val": []}
    for entry in index.entries:
        side = split.side(entry)
        if side is None:
            index.report.exclude(entry, "config folder not in the split file")
        else:
            sides[side].append(entry)
    store = store or make_store(cfg)
    bar = (
        (lambda it: tqdm(list(it), desc="decode+log-mel", unit="file", leave=False))
        if progress
        else None
    )
    train = store.bags(sides["train"], index.report, bar)
    val = store.bags(sides["val"], index.report, bar)
    index.report.write(run_dir)
    check_bags(train, "training")
    if not val:
        raise DataError("the validation side has no usable recording")
    return TrainData(train, val, split, index.report)


def check_bags(bags: list[Bag], what: str) -> None:
    labels = {b.label for b in bags}
    if labels != {0, 1}:
        raise DataError(f"the {what} side needs both good and defect recordings, has {labels}")
