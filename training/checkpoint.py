"""Training checkpoints: plain dicts of tensors and scalars, loaded with `weights_only=True`.

A checkpoint carries everything needed to resume or export without the run folder: weights,
optimizer and scheduler state, RNG states, epoch, metrics, threshold, label map, front-end and
model parameters, the resolved config and the split.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from deploy.artifact import LABEL_NAMES
from deploy.errors import WeldmonError

CHECKPOINT_FORMAT = "weldmon-train-checkpoint-1"
LAST_NAME = "last_model.pt"
BEST_NAME = "best_model.pt"
SNAPSHOT_FOLDER = "best_models"
LABEL_MAP = {name: i for i, name in enumerate(LABEL_NAMES)}  # good_weld 0, defect 1
DEFECT_IDX = LABEL_MAP["defect"]
REQUIRED_KEYS = ("model_state", "epoch", "threshold", "frontend", "model_params", "config")


class CheckpointError(WeldmonError):
    """A file is not a usable training checkpoint."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write atomically (a crash mid-write leaves the previous checkpoint intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    tmp.replace(path)
    return path


# In torch's message when weights_only=True met a Python object it will not rebuild.
UNSUPPORTED_GLOBAL = "Unsupported global"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with `weights_only=True` (no arbitrary unpickling) and check the format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if not zipfile.is_zipfile(path):
        # torch.save always writes a zip archive; anything else (truncated, garbage, another
        # format) would only reach the unpickler and be reported as a pickle problem.
        raise CheckpointError(f"{path}: not a readable training checkpoint (not a torch archive)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if UNSUPPORTED_GLOBAL not in str(exc):  # garbage, not a pickle of objects
            raise CheckpointError(
                f"{path}: not a readable training checkpoint (not a torch save file)"
            ) from exc
        # torch's own message advises weights_only=False, i.e. running the file's code: never.
        raise CheckpointError(
            f"{path}: holds Python objects besides tensors and plain values, so it is not a "
            "weldmon training checkpoint; it is refused unread (loading it could run code)"
        ) from exc
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable training checkpoint ({first})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a weldmon training checkpoint ({CHECKPOINT_FORMAT})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return ckpt


def snapshot_name(stamp: str, epoch: int, f1: float, val_loss: float) -> str:
    """`<stamp>_epXXX_f1_<f1>_vl_<loss>`, the original's snapshot folder name."""
    return f"{stamp}_ep{epoch:03d}_f1_{f1:.4f}_vl_{val_loss:.4f}"


def snapshot_scores(run_dir: Path) -> list[float]:
    """Validation macro-F1 of every snapshot under `run_dir/best_models`, read from the names."""
    scores = []
    for d in sorted((Path(run_dir) / SNAPSHOT_FOLDER).glob("*_ep*_f1_*_vl_*")):
        try:
            scores.append(float(d.name.split("_f1_")[1].split("_vl_")[0]))
        except (IndexError, ValueError):
            continue  # a folder someone else put there; not a snapshot of ours
    return scores
