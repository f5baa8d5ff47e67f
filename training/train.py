"""The MIL training loop, top to bottom: data, model, optimiser, epochs, checkpoints.

A recording is a bag of 1 s windows. Window probability = softmax(logits)[defect]; a bag's
probability is the mean of its top-k windows (`deploy.pooling.topk_pool`, the same function
the artifact and the evaluator use), with k from `topk_ratio_pos` for defect bags and
`topk_ratio_neg` for good bags. Loss = BCE(bag) + good_window_weight x BCE(every window of good
bags -> 0). Linear warm-up, then reduce-on-plateau on validation loss; early stopping on
validation macro-F1; gradients clipped. Seeded and deterministic on CPU.

A bag is one weld as the daemon cuts it (`training.features`, `training.welds`): the
windows of [start, end), aligned at the weld start. Training runs on cached log-mel maps
(`map_classifier(model)(maps)`: the input normalisation and the CNN); the front end has no
trainable weights, so the exported artifact (front end + the rest) computes the same thing
from raw audio. Optional, for session robustness (each measured in docs/training.md):
augmentation of each bag's frames per epoch (`training.augment`), epochs drawn evenly over
config folders, and an auxiliary defect-type head (the original's multiclass task) on the
CNN's embedding, used in training only. Under torchrun the batches' bags are shared out
between processes (`training.distributed`); rank 0 writes the files.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 - the universal alias
from tqdm import tqdm

from deploy.artifact import defect_probability
from deploy.backbone import WindowClassifier
from deploy.pooling import topk_pool
from training import distributed, plots
from training.augment import Augmenter
from training.checkpoint import (
    BEST_NAME,
    DEFECT_IDX,
    LABEL_MAP,
    LAST_NAME,
    SNAPSHOT_FOLDER,
    load_checkpoint,
    save_checkpoint,
    snapshot_name,
)
from training.config import ConfigError, TrainConfig
from training.dataset import LABEL_CODES
from training.features import Bag, FeatureStore
from training.metrics import confusion, roc_auc, tune_threshold
from training.prepare import TrainData, make_store, prepare_data
from training.step import TrainStep, epoch_order, map_classifier, type_loss

EVAL_BATCH_WINDOWS = 256  # windows per no-grad forward at validation: bounds memory
# Fewer validation welds than this and one weld moves macro-F1 or the false-alarm rate by 10
# points or more: the figures are printed with a warning, and read as a curve, not a verdict.
MIN_VALIDATION_WELDS = 10
CONFIG_NAME = "config.json"
HISTORY_NAME = "metrics.csv"
CURVES_NAME = "curves.png"
# Keys that may differ between a run and its --resume: how long to go on, and where things are.
RESUMABLE_CHANGES = (
    "epochs",
    "patience",
    "data_root",
    "split_file",
    "feature_cache_dir",
    "num_threads",
)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, Any]]
    stopped_early: bool


def window_probs(backbone: nn.Module, features: Tensor) -> Tensor:
    """Log-mel maps [T, 1, M, F] -> defect probability per window [T]."""
    return defect_probability(backbone(features), DEFECT_IDX)


def mil_loss(probs: list[Tensor], labels: list[int], cfg: TrainConfig) -> Tensor:
    """BCE of top-k pooled bags (asymmetric k) + good_window_weight x BCE of good windows."""
    bag_p = torch.stack(
        [
            topk_pool(p, cfg.topk_ratio_pos if y else cfg.topk_ratio_neg)
            for p, y in zip(probs, labels, strict=True)
        ]
    )
    target = torch.tensor(labels, dtype=bag_p.dtype, device=bag_p.device)
    loss = F.binary_cross_entropy(bag_p, target)
    good = [p for p, y in zip(probs, labels, strict=True) if y == 0]
    if good and cfg.good_window_weight > 0:
        good_p = torch.cat(good)
        loss = loss + cfg.good_window_weight * F.binary_cross_entropy(
            good_p, torch.zeros_like(good_p)
        )
    return loss


@torch.no_grad()
def bag_window_probs(backbone: nn.Module, bags: list[Bag]) -> list[Tensor]:
    """Eval-mode window probabilities of every bag (windows batched across bags)."""
    backbone.eval()
    feats = torch.cat([b.features for b in bags]).to(next(backbone.parameters()).device)
    probs = torch.cat(
        [
            window_probs(backbone, feats[i : i + EVAL_BATCH_WINDOWS])
            for i in range(0, len(feats), EVAL_BATCH_WINDOWS)
        ]
    )
    return list(torch.split(probs, [b.n_windows for b in bags]))


def validate(backbone: nn.Module, bags: list[Bag], cfg: TrainConfig) -> dict[str, float]:
    """Validation loss, pooled (eval_pool_ratio) macro-F1 / F1 / ROC-AUC, tuned threshold."""
    probs = bag_window_probs(backbone, bags)
    labels = [b.label for b in bags]
    loss = float(mil_loss(probs, labels, cfg))
    pooled = [float(topk_pool(p, cfg.eval_pool_ratio)) for p in probs]
    if cfg.auto_threshold:
        threshold, _ = tune_threshold(labels, pooled, cfg.threshold_grid())
    else:
        threshold = cfg.threshold
    cm = confusion(labels, [p >= threshold for p in pooled])
    return {
        "val_loss": loss,
        "val_macro_f1": cm.macro_f1,
        "val_f1_defect": cm.f1,
        "val_roc_auc": roc_auc(labels, pooled),
        "threshold": threshold,
    }


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = cfg.model_dump()
    changed = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if changed:
        raise ConfigError(
            f"--resume with a different config: {changed} changed since the run began"
        )


def _save_epoch(
    run_dir: Path,
    payload: dict[str, Any],
    improved: bool,
    history: list[dict[str, Any]],
    snapshots: bool,
) -> None:
    """Checkpoints (last always, best and a snapshot on improvement) and the history."""
    save_checkpoint(run_dir / LAST_NAME, payload)
    if improved:
        save_checkpoint(run_dir / BEST_NAME, payload)
    if improved and snapshots:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        metrics = payload["metrics"]
        name = snapshot_name(stamp, payload["epoch"], metrics["val_macro_f1"], metrics["val_loss"])
        save_checkpoint(run_dir / SNAPSHOT_FOLDER / name / "model.pt", payload)
    _write_history(run_dir, history)


def _write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    with (run_dir / HISTORY_NAME).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def train(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    data: TrainData | None = None,
    store: FeatureStore | None = None,
    resume: bool = False,
    stop_after_epoch: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    snapshots: bool = True,
) -> TrainResult:
    """Train one config into `run_dir`; `stop_after_epoch` ends this call early (resumable).
    `snapshots` False skips the `best_models/` copies (cv folds need only best and last)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ranks = distributed.from_environment()
    previous_threads = torch.get_num_threads()
    previous_determinism = torch.are_deterministic_algorithms_enabled()
    threads = cfg.num_threads or distributed.default_threads(ranks)
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    if ranks.parallel and store is None:  # one decode per file for all ranks, on disk
        cache = cfg.feature_cache_dir or str(run_dir / "feature_cache")
        store = make_store(cfg.model_copy(update={"feature_cache_dir": cache}))
    if not ranks.is_main:
        log, progress = (lambda _: None), False
    try:
        return _train(
            cfg, run_dir, data, store, resume, stop_after_epoch, progress, log, ranks, snapshots
        )
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_determinism)


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    data: TrainData | None,
    store: FeatureStore | None,
    resume: bool,
    stop_after_epoch: int | None,
    progress: bool,
    log: Callable[[str], None],
    ranks: distributed.Ranks = distributed.SINGLE,
    snapshots: bool = True,
) -> TrainResult:
    # ---- resume point, config -------------------------------------------------------------
    ckpt = load_checkpoint(run_dir / LAST_NAME) if resume else None
    if ckpt is not None:
        _check_resumable(ckpt["config"], cfg)
        if cfg.split_file is None and (run_dir / "split.json").is_file():
            cfg = cfg.model_copy(update={"split_file": str(run_dir / "split.json")})
    if ranks.is_main:
        (run_dir / CONFIG_NAME).write_text(json.dumps(cfg.model_dump(), indent=2) + "\n")

    # ---- data: every file decoded once, log-mel maps in memory ---------------------------
    with distributed.local_main_first(ranks):
        data = data or prepare_data(cfg, run_dir, store=store, progress=progress)
    if ranks.parallel and store is not None:
        n_files = len(data.train) + len(data.val)
        print(
            f"rank {ranks.rank}/{ranks.world_size}: decoded {store.decodes} of {n_files} "
            "recordings (the rest read from the shared feature cache)",
            file=sys.stderr,
        )
    log(
        f"data: {len(data.train)} training / {len(data.val)} validation welds, "
        f"{sum(b.n_windows for b in data.train)} training windows, "
        f"{len(data.report.bad)} file(s) excluded"
    )
    if len(data.val) < MIN_VALIDATION_WELDS:
        log(
            f"warning: small validation set: {len(data.val)} welds (< {MIN_VALIDATION_WELDS}); "
            "its macro-F1, ROC-AUC and tuned threshold are small-sample figures (one weld "
            "moves them by 10 points or more); `ensemble: K` tunes the shipped threshold on "
            "every training weld out of fold instead"
        )

    # ---- model, optimiser, schedules ------------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = WindowClassifier(cfg.frontend(), cfg.backbone())
    backbone = map_classifier(model)
    type_head = None  # built only when used: its initialisation draws from the torch RNG
    if cfg.type_head_weight > 0:
        type_head = nn.Linear(cfg.backbone().embedding_size, len(LABEL_CODES))
    stepper = TrainStep(model, type_head).to(ranks.device)
    params = list(stepper.parameters())
    step_module = distributed.wrap(stepper, ranks)  # DDP under torchrun: averages gradients
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        min_lr=cfg.min_lr,
    )
    shuffle = torch.Generator().manual_seed(cfg.seed)
    augmenter = None
    if cfg.augmentation().active:
        augmenter = Augmenter(cfg.augmentation(), store or make_store(cfg), data.train, cfg.seed)
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    warmup_steps = int(cfg.warmup_fraction * cfg.epochs * steps_per_epoch)
    start_epoch, step, best_f1, best_epoch, since_best = 1, 0, -1.0, 0, 0
    best_loss = math.inf
    history: list[dict[str, Any]] = []
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state"])
        if type_head is not None:
            type_head.load_state_dict(ckpt["type_head_state"])
        if augmenter is not None:
            augmenter.generator.set_state(ckpt["rng"]["augment"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        plateau.load_state_dict(ckpt["plateau_state"])
        shuffle.set_state(ckpt["rng"]["shuffle"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        start_epoch, step = ckpt["epoch"] + 1, ckpt["step"]
        warmup_steps = ckpt["warmup_steps"]
        best_f1, best_epoch, since_best = ckpt["best_f1"], ckpt["best_epoch"], ckpt["since_best"]
        best_loss = ckpt.get("best_val_loss", math.inf)
        history = list(ckpt["history"])
        log(f"resumed from {run_dir / LAST_NAME} after epoch {ckpt['epoch']}")

    # ---- epochs ---------------------------------------------------------------------------
    stopped_early = since_best >= cfg.patience
    for epoch in range(start_epoch, cfg.epochs + 1):
        if stopped_early or (stop_after_epoch is not None and epoch > stop_after_epoch):
            break
        started = time.perf_counter()
        backbone.train()
        order = epoch_order(data.train, cfg.balance_folders, shuffle)
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        total_loss = 0.0
        bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress)
        for batch in bar:
            if step < warmup_steps:  # linear warm-up, per step
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * (step + 1) / warmup_steps
            bags = [data.train[i] for i in distributed.shard_of(batch, ranks)]
            maps = [augmenter.windows(b) if augmenter else b.features for b in bags]
            sizes = [m.shape[0] for m in maps]
            probs, emb = step_module(torch.cat(maps).to(ranks.device))
            per_bag = list(torch.split(probs, sizes))
            loss = mil_loss(per_bag, [b.label for b in bags], cfg)
            if type_head is not None:
                per_emb = list(torch.split(emb, sizes))
                loss = loss + cfg.type_head_weight * type_loss(
                    type_head, per_emb, per_bag, bags, cfg.topk_ratio_pos
                )
            optimizer.zero_grad(set_to_none=True)
            (loss * distributed.loss_weight(batch, ranks)).backward()
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            step += 1
            batch_loss = loss.item()
            total_loss += batch_loss * len(batch[ranks.rank :: ranks.world_size])
            bar.set_postfix(loss=f"{batch_loss:.4f}")

        # ---- validation, schedule, selection ---------------------------------------------
        total_loss = distributed.sum_over_ranks(total_loss, ranks)
        distributed.broadcast_buffers(backbone, ranks)  # every rank validates rank 0's model
        metrics = validate(backbone, data.val, cfg)
        lr_now = optimizer.param_groups[0]["lr"]
        if step >= warmup_steps:
            plateau.step(metrics["val_loss"])
        # Macro-F1 on a small validation set saturates (often at 1.0 on easy data) long before
        # the model is good; a tie goes to the lower validation loss, so the selected
        # checkpoint keeps improving instead of freezing at the first epoch that hit the top.
        improved = metrics["val_macro_f1"] > best_f1 or (
            metrics["val_macro_f1"] == best_f1 and metrics["val_loss"] < best_loss
        )
        if improved:
            best_f1, best_epoch, since_best = metrics["val_macro_f1"], epoch, 0
            best_loss = metrics["val_loss"]
        else:
            since_best += 1
        stopped_early = since_best >= cfg.patience
        row = {
            "epoch": epoch,
            "train_loss": total_loss / len(data.train),
            **metrics,
            "lr": lr_now,
            "seconds": round(time.perf_counter() - started, 3),
            "best": int(improved),
        }
        history.append(row)
        log(
            f"epoch {epoch:3d}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_f1 {row['val_macro_f1']:.4f}  "
            f"val_auc {row['val_roc_auc']:.4f}  thr {row['threshold']:.2f}  lr {lr_now:.2e}  "
            f"{row['seconds']:.1f}s{'  *best' if improved else ''}"
        )

        # ---- checkpoints: last always, best and a snapshot on improvement ----------------
        payload = {
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "plateau_state": plateau.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "shuffle": shuffle.get_state(),
                **({"augment": augmenter.generator.get_state()} if augmenter else {}),
            },
            "type_head_state": type_head.state_dict() if type_head is not None else {},
            "epoch": epoch,
            "step": step,
            "warmup_steps": warmup_steps,
            "metrics": metrics,
            "threshold": metrics["threshold"],
            "label_map": dict(LABEL_MAP),
            "defect_idx": DEFECT_IDX,
            "frontend": cfg.frontend().as_dict(),
            "model_params": cfg.backbone().as_dict(),
            "chunk_samples": cfg.chunk_samples,
            "config": cfg.model_dump(),
            "split": data.split.as_dict() if data.split else None,
            "best_f1": best_f1,
            "best_val_loss": best_loss,
            "best_epoch": best_epoch,
            "since_best": since_best,
            "history": history,
        }
        if ranks.is_main:
            _save_epoch(run_dir, payload, improved, history, snapshots)

    if history and ranks.is_main:  # once per call: a plot costs more than a small epoch
        plots.training_curves(history, run_dir / CURVES_NAME)
    if stopped_early:
        log(
            f"early stop: no better validation macro-F1 (or lower loss at equal macro-F1) "
            f"for {cfg.patience} epochs"
        )
    best = next((h for h in history if h["epoch"] == best_epoch), history[-1] if history else {})
    log(f"best epoch {best_epoch}: val macro-F1 {best_f1:.4f} -> {run_dir / BEST_NAME}")
    return TrainResult(run_dir, run_dir / BEST_NAME, best_epoch, best, history, stopped_early)
