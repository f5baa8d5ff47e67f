"""A cross-validation ensemble: K members, each trained with one group of config folders held
out, shipped as one artifact (`deploy.ensemble`) with an out-of-fold threshold (`training.oof`).

On 23 recordings the seed moves a model's figure more than any technique does, and a
threshold tuned on the two validation folders of `val_fraction` (a handful of welds) calls
good welds defect at new setups. So, with `ensemble: K` (K > 1):

1. the run's config folders (all of them, or a split file's training folders) are dealt into
   K groups, stratified by class, deterministic from the seed (`folder_groups`);
2. member i (seed `seed + i - 1`) is trained by `training.train` with group i as its
   validation side, so every training weld is held out from exactly one member;
3. each member scores its held-out welds as the daemon judges them (the weld's windows,
   top-k pooled with `eval_pool_ratio`): one out-of-fold score per training weld;
4. the threshold is tuned on those pooled scores (`training.oof.calibrate`), its false-alarm
   rate, recall and ROC-AUC printed with intervals;
5. the members are averaged per window in one `EnsembleClassifier`, saved as the run's
   `best_model.pt` for `weldmon export`.

Member selection: the last epoch of the fixed schedule (`epochs`; `patience` is not used).
A member's validation side is the group whose out-of-fold scores set the threshold, a few
welds; choosing the checkpoint on it (by macro-F1 or loss) would tune on those welds twice
and make the out-of-fold figures optimistic. The validation figures are still logged each
epoch, as a curve to read, not a signal. (Reduce-on-plateau still reads the validation loss:
a learning-rate schedule, a much weaker use of the held-out welds.)
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from deploy.backbone import WindowClassifier
from deploy.calibration import calibration_warnings, format_calibration
from deploy.ensemble import EnsembleClassifier
from deploy.pooling import topk_pool
from training.checkpoint import (
    BEST_NAME,
    DEFECT_IDX,
    LABEL_MAP,
    LAST_NAME,
    load_checkpoint,
    save_checkpoint,
)
from training.config import TrainConfig
from training.dataset import DataReport, index_dataset
from training.export import classifier_from_checkpoint
from training.features import Bag, FeatureStore
from training.oof import OofScore, calibrate
from training.prepare import SPLIT_NAME, DataError, TrainData, check_bags, make_store
from training.split import Split, folder_classes, read_split
from training.step import map_classifier
from training.train import TrainResult, bag_window_probs, train

ENSEMBLE_NAME = "ensemble.json"  # the members, their seeds and folders, the calibration
OOF_NAME = "oof.csv"  # one row per training weld: its out-of-fold score and member
MEMBER_SELECTION = "last_epoch"  # see the module docstring


def member_folder(run_dir: Path, member: int) -> Path:
    """Where member `member` (1-based) trains."""
    return Path(run_dir) / f"member_{member:02d}"


def folder_groups(bags: list[Bag], k: int, seed: int) -> list[list[str]]:
    """The run's config folders dealt into `k` groups: each class's folders shuffled (from
    `seed`) and dealt in turn, defect folders first, the deal running on across classes, so
    groups differ in size by one folder at most and spread each class over the groups."""
    classes = folder_classes([b.entry for b in bags])
    if len(classes) < k:
        raise DataError(
            f"ensemble: {k} members need at least {k} config folders (one group held out per "
            f"member), found {len(classes)}; lower `ensemble`"
        )
    rng = random.Random(seed)
    groups: list[list[str]] = [[] for _ in range(k)]
    slot = 0
    for label in (1, 0):
        folders = sorted(f for f, c in classes.items() if c == label)
        rng.shuffle(folders)
        for folder in folders:
            groups[slot % k].append(folder)
            slot += 1
    return [sorted(g) for g in groups]


def ensemble_bags(
    cfg: TrainConfig, run_dir: Path, store: FeatureStore, progress: bool, log: Callable[[str], None]
) -> tuple[list[Bag], DataReport]:
    """Every usable weld of `cfg.data_root` (only a split file's training folders, when one is
    given: its validation folders stay unseen for `weldmon evaluate --split`)."""
    if not cfg.data_root:
        raise DataError("no data_root: set it in the config or pass --data-root")
    index = index_dataset(
        Path(cfg.data_root), sample_rate=cfg.sample_rate, chunk_samples=cfg.chunk_samples
    )
    entries = index.entries
    if cfg.split_file:
        split = read_split(Path(cfg.split_file))
        split.write(Path(run_dir) / SPLIT_NAME)
        entries = [e for e in entries if split.side(e) == "train"]
        log(
            f"split file {cfg.split_file}: training on its {len(split.train_folders)} training "
            f"folders; its {len(split.val_folders)} validation folder(s) stay unseen"
        )
    bar = (
        (lambda it: tqdm(list(it), desc="decode+log-mel", unit="file", leave=False))
        if progress
        else None
    )
    bags = store.bags(entries, index.report, bar)
    index.report.write(Path(run_dir))
    check_bags(bags, "training")
    return bags, index.report


def _write_oof(run_dir: Path, scores: list[OofScore], threshold: float) -> None:
    with (run_dir / OOF_NAME).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*asdict(scores[0]), "called_defect"])
        writer.writeheader()
        for s in scores:
            writer.writerow({**asdict(s), "called_defect": int(s.score >= threshold)})


def train_ensemble(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    bags: list[Bag] | None = None,
    report: DataReport | None = None,
    store: FeatureStore | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train `cfg.ensemble` members into `run_dir/member_XX`, tune the out-of-fold threshold,
    and save the ensemble as `run_dir/best_model.pt`. `bags` (with their `report`): train on
    these welds (a cv fold's training side) instead of reading `cfg.data_root`. `resume`
    continues each member from its `last_model.pt` where it has one."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    store = store or make_store(cfg)
    if bags is None:
        bags, report = ensemble_bags(cfg, run_dir, store, progress, log)
    if report is None:
        raise ValueError("train_ensemble: bags come with the data report they were read with")
    groups = folder_groups(bags, cfg.ensemble, cfg.seed)
    log(
        f"ensemble: {cfg.ensemble} members over {len(bags)} welds in "
        f"{sum(len(g) for g in groups)} config folders; member i holds out group i"
    )
    scores: list[OofScore] = []
    members: list[WindowClassifier] = []
    record: list[dict[str, Any]] = []
    for i, held in enumerate(groups, start=1):
        seed = cfg.seed + i - 1
        train_bags = [b for b in bags if b.entry.config_folder not in held]
        val_bags = [b for b in bags if b.entry.config_folder in held]
        labels = {b.label for b in train_bags}
        if labels != {0, 1}:
            raise DataError(
                f"member {i} holds out {held}: its training side has class(es) {labels} only, "
                "both good and defect are needed; lower `ensemble` or add config folders"
            )
        trained_on = sorted({b.entry.config_folder for b in train_bags})
        split = Split(
            seed, len(held) / (len(held) + len(trained_on)), tuple(trained_on), tuple(held)
        )
        folder = member_folder(run_dir, i)
        split.write(folder / SPLIT_NAME)
        log(f"== member {i}/{cfg.ensemble} (seed {seed}): holds out {held} ({len(val_bags)} welds)")
        member_cfg = cfg.model_copy(update={"seed": seed, "ensemble": 1, "patience": cfg.epochs})
        train(
            member_cfg,
            folder,
            data=TrainData(train_bags, val_bags, split, report),
            store=store,
            resume=resume and (folder / LAST_NAME).is_file(),
            progress=progress,
            log=log,
            snapshots=False,
        )
        ckpt = load_checkpoint(folder / LAST_NAME)  # the fixed schedule's end, see above
        log(f"member {i}: its last epoch ({ckpt['epoch']}) joins the ensemble (fixed schedule)")
        classifier = classifier_from_checkpoint(ckpt)
        assert isinstance(classifier, WindowClassifier)  # a member run is no ensemble
        members.append(classifier)
        for bag, probs in zip(
            val_bags, bag_window_probs(map_classifier(classifier), val_bags), strict=True
        ):
            pooled = float(topk_pool(probs, cfg.eval_pool_ratio))
            scores.append(OofScore(bag.entry.config_folder, bag.key, bag.label, pooled, i))
        record.append(
            {"member": i, "seed": seed, "held_out": held, "trained_on": trained_on,
             "folder": folder.name, "epoch": int(ckpt["epoch"])}
        )  # fmt: skip

    calibration = calibrate(scores, cfg.threshold_grid(), seed=cfg.seed)
    _write_oof(run_dir, scores, calibration["threshold"])
    log(
        f"out-of-fold calibration: {len(scores)} training welds, each scored by the member "
        "that never saw its config folder"
    )
    for line in format_calibration(calibration):
        log(f"  {line}")
    for warning in calibration_warnings(calibration):
        log(f"warning: {warning}")
    seeds = [r["seed"] for r in record]
    ensemble_meta = {
        "members": cfg.ensemble,
        "seeds": seeds,
        "width": cfg.width,
        "selection": MEMBER_SELECTION,
        "epochs": cfg.epochs,
    }
    (run_dir / ENSEMBLE_NAME).write_text(
        json.dumps({**ensemble_meta, "member_runs": record, "calibration": calibration}, indent=2)
        + "\n"
    )
    model = EnsembleClassifier.from_members(members, cfg.frontend(), cfg.backbone(), DEFECT_IDX)
    metrics = {
        "oof_threshold": calibration["threshold"],
        "oof_false_alarm_rate": calibration["false_alarm_rate"],
        "oof_recall": calibration["recall"],
        "oof_roc_auc": calibration["roc_auc"],
    }
    trained_folders = sorted({b.entry.config_folder for b in bags})
    payload = {
        "model_state": model.state_dict(),
        "epoch": cfg.epochs,
        "threshold": calibration["threshold"],
        "metrics": {},  # no tuned-on validation figures: the calibration says it all
        "label_map": dict(LABEL_MAP),
        "defect_idx": DEFECT_IDX,
        "frontend": cfg.frontend().as_dict(),
        "model_params": cfg.backbone().as_dict(),
        "chunk_samples": cfg.chunk_samples,
        "config": cfg.model_dump(),
        "split": {"train_folders": trained_folders, "val_folders": []},
        "ensemble": ensemble_meta,
        "calibration": calibration,
    }
    save_checkpoint(run_dir / BEST_NAME, payload)
    log(f"ensemble of {cfg.ensemble} -> {run_dir / BEST_NAME}")
    return TrainResult(run_dir, run_dir / BEST_NAME, cfg.epochs, metrics, [], False)


def fit(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    store: FeatureStore | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """What `weldmon train` runs: one model (`ensemble: 1`, `training.train`) or the
    ensemble; either way `run_dir/best_model.pt` is what `weldmon export` takes."""
    if cfg.ensemble == 1:
        return train(cfg, run_dir, store=store, resume=resume, progress=progress, log=log)
    return train_ensemble(cfg, run_dir, store=store, resume=resume, progress=progress, log=log)
