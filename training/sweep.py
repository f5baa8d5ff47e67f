"""The tuning protocol of the handoff guide, as one command.

Several configs that vary only the tuning knobs (lr, topk_ratio_pos, good_window_weight,
eval_pool_ratio, patience, ...) train with the same seed and the same split; each run's
`best_model.pt` is exported and evaluated by the same evaluator on the split's held-out
folders; a leaderboard ranks them by F1_DEFECT with configurable tie-breakers and shows each
run's stability (spread of its top snapshot scores). `promote` freezes one run: artifact,
sha256, config and report copied into one folder.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from deploy.export import DEFAULT_ARTIFACT_NAME
from deploy.strict_model import StrictModel
from training.checkpoint import BEST_NAME, snapshot_scores
from training.config import ConfigError, load_config, make_config, read_mapping
from training.dataset import index_dataset
from training.ensemble import fit
from training.evaluate import evaluate
from training.export import export_checkpoint
from training.prepare import make_store
from training.report import write_report
from training.split import make_split

# Keys a sweep run may not override: the protocol compares configs on the same data, split
# and seed.
FIXED_KEYS = ("seed", "data_root", "split_file", "val_fraction")
LEADERBOARD_METRICS = (
    "F1_DEFECT",
    "PRECISION_DEFECT",
    "RECALL_DEFECT",
    "ROC_AUC",
    "PR_AUC",
    "ACCURACY",
)
EVAL_FOLDER = "eval"
PROMOTED_FOLDER = "promoted"


class SweepRun(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")  # becomes a folder name
    overrides: dict[str, Any] = Field(default_factory=dict)  # TrainConfig keys for this run


class SweepConfig(StrictModel):
    base_config: str  # training config every run starts from (relative to the sweep file)
    data_root: str | None = None  # overrides the base config's
    output_dir: str = "runs/sweep"  # one sub-folder per run, plus the leaderboard
    rank_by: str = "F1_DEFECT"  # primary ranking metric (higher is better)
    tie_breakers: list[str] = Field(default_factory=lambda: ["PRECISION_DEFECT", "RECALL_DEFECT"])
    stability_top_k: int = Field(3, ge=2)  # snapshots whose score spread is the stability column
    runs: list[SweepRun] = Field(min_length=1)


def load_sweep(path: Path) -> SweepConfig:
    raw = read_mapping(path)
    try:
        sweep = SweepConfig(**raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
    names = [r.name for r in sweep.runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: run names must be unique, got {names}")
    for run in sweep.runs:
        fixed = sorted(set(run.overrides) & set(FIXED_KEYS))
        if fixed:
            raise ConfigError(f"{path}: run {run.name} overrides {fixed}, fixed across a sweep")
    for key in [sweep.rank_by, *sweep.tie_breakers]:
        if key not in LEADERBOARD_METRICS:
            raise ConfigError(f"{path}: cannot rank by {key} (one of {LEADERBOARD_METRICS})")
    base = Path(sweep.base_config)
    if not base.is_absolute():
        sweep = sweep.model_copy(update={"base_config": str(Path(path).parent / base)})
    return sweep


def stability(run_dir: Path, top_k: int) -> float:
    """Spread (max - min) of the best `top_k` snapshot macro-F1s; NaN with fewer snapshots."""
    scores = sorted(snapshot_scores(run_dir), reverse=True)[:top_k]
    return max(scores) - min(scores) if len(scores) >= 2 else float("nan")


def rank(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Sort by `keys` (each higher-is-better), NaN last; stable for full ties."""

    def key(row: dict[str, Any]) -> tuple:
        return tuple(-(row[k] if not math.isnan(row[k]) else -math.inf) for k in keys)

    return sorted(rows, key=key)


def write_leaderboard(out_dir: Path, rows: list[dict[str, Any]]) -> Path:
    with (out_dir / "leaderboard.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    out = out_dir / "leaderboard.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def run_sweep(
    sweep: SweepConfig,
    *,
    data_root: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train, export and evaluate every run; returns the ranked leaderboard rows."""
    out_dir = Path(sweep.output_dir)
    base = load_config(Path(sweep.base_config))
    root = data_root or sweep.data_root or base.data_root
    if not root:
        raise ConfigError("no data_root for the sweep (sweep file, base config or --data-root)")
    base = base.model_copy(update={"data_root": root})
    index = index_dataset(
        Path(root), sample_rate=base.sample_rate, chunk_samples=base.chunk_samples
    )
    split_path = make_split(index.entries, seed=base.seed, val_fraction=base.val_fraction).write(
        out_dir / "split.json"
    )
    store = make_store(base)  # one decode per file for the whole sweep
    rows = []
    for run in sweep.runs:
        cfg = make_config(
            {**base.model_dump(), **run.overrides, "split_file": str(split_path)},
            source=f"run {run.name}",
        )
        run_dir = out_dir / run.name
        log(f"== sweep run {run.name}: {run.overrides}")
        result = fit(cfg, run_dir, store=store, progress=progress, log=log)
        exported = export_checkpoint(run_dir / BEST_NAME, run_dir / DEFAULT_ARTIFACT_NAME)
        evaluation = evaluate(exported.path, Path(root), split_file=split_path)
        write_report(evaluation, run_dir / EVAL_FOLDER)
        m = evaluation.metrics
        rows.append(
            {
                "name": run.name,
                **{k: float(m[k]) for k in LEADERBOARD_METRICS},
                "best_epoch": result.best_epoch,
                "val_macro_f1": float(result.best_metrics.get("val_macro_f1", float("nan"))),
                "stability": stability(run_dir, sweep.stability_top_k),
                "threshold": exported.threshold,
                "sha256": exported.sha256,
                "overrides": json.dumps(run.overrides, sort_keys=True),
            }
        )
    ranked = rank(rows, [sweep.rank_by, *sweep.tie_breakers])
    write_leaderboard(out_dir, ranked)
    return ranked


def promote(sweep: SweepConfig, name: str) -> Path:
    """Copy run `name`'s artifact, sha256, config and evaluation into `promoted/<name>/`."""
    out_dir = Path(sweep.output_dir)
    run_dir = out_dir / name
    artifact = run_dir / DEFAULT_ARTIFACT_NAME
    if not artifact.is_file():
        known = [r.name for r in sweep.runs]
        raise ConfigError(f"no exported artifact for run {name!r} under {out_dir} (runs: {known})")
    dest = out_dir / PROMOTED_FOLDER / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for src in (
        artifact,
        artifact.with_name(artifact.name + ".sha256"),
        run_dir / "config.json",
        run_dir / "split.json",
    ):
        shutil.copy2(src, dest / src.name)
    shutil.copytree(run_dir / EVAL_FOLDER, dest / EVAL_FOLDER)
    for board in ("leaderboard.csv", "leaderboard.md"):
        if (out_dir / board).is_file():
            shutil.copy2(out_dir / board, dest / board)
    return dest
