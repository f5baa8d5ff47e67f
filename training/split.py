"""Train/validation split by config folder (never by run or window), reproducible from a seed.

Runs of one config folder are near-duplicates, so a folder lies wholly on one side. Folders
are drawn per class (a folder's class is its runs' majority binary label) so validation holds
both classes whenever each class has at least two folders. The split is a JSON file that later
runs, sweeps and `weldmon evaluate --split` reuse.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import WeldmonError
from training.dataset import RunEntry

SPLIT_FORMAT = "weldmon-split-1"


class SplitError(WeldmonError):
    """A split cannot be made or read (too few folders, unreadable or malformed file)."""


@dataclass(frozen=True)
class Split:
    seed: int
    val_fraction: float
    train_folders: tuple[str, ...]
    val_folders: tuple[str, ...]

    def side(self, entry: RunEntry) -> str | None:
        """'train', 'val', or None for a folder this split does not know."""
        if entry.config_folder in self.train_folders:
            return "train"
        if entry.config_folder in self.val_folders:
            return "val"
        return None

    def as_dict(self) -> dict:
        return {
            "format": SPLIT_FORMAT,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "train_folders": list(self.train_folders),
            "val_folders": list(self.val_folders),
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        return path


def folder_classes(entries: list[RunEntry]) -> dict[str, int]:
    """Config folder -> majority binary label of its runs (ties count as defect)."""
    votes: dict[str, Counter] = {}
    for e in entries:
        votes.setdefault(e.config_folder, Counter())[e.binary_label] += 1
    return {f: int(c[1] >= c[0]) for f, c in votes.items()}


def make_split(entries: list[RunEntry], *, seed: int, val_fraction: float) -> Split:
    """Hold out about `val_fraction` of each class's folders (at least one, if it has two)."""
    classes = folder_classes(entries)
    if len(classes) < 2:
        raise SplitError(f"need at least 2 config folders to split, found {len(classes)}")
    rng = random.Random(seed)
    val: list[str] = []
    for label in (0, 1):
        folders = sorted(f for f, c in classes.items() if c == label)
        rng.shuffle(folders)
        if len(folders) < 2:
            continue  # one folder of this class: it must stay in training
        n_val = min(len(folders) - 1, max(1, math.floor(val_fraction * len(folders) + 0.5)))
        val.extend(folders[:n_val])
    if not val:
        val = [sorted(classes)[rng.randrange(len(classes))]]
    train = sorted(f for f in classes if f not in val)
    return Split(seed, val_fraction, tuple(train), tuple(sorted(val)))


def read_split(path: Path) -> Split:
    try:
        raw = json.loads(Path(path).read_text())
    except UnicodeDecodeError as exc:
        raise SplitError(f"{path}: not a split file (binary, not JSON text)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise SplitError(f"{path}: cannot read split file ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != SPLIT_FORMAT:
        raise SplitError(f"{path}: not a weldmon split file (format {SPLIT_FORMAT} expected)")
    try:
        split = Split(
            int(raw["seed"]),
            float(raw["val_fraction"]),
            tuple(raw["train_folders"]),
            tuple(raw["val_folders"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SplitError(f"{path}: malformed split file ({exc!r})") from exc
    both = set(split.train_folders) & set(split.val_folders)
    if both:
        raise SplitError(f"{path}: folder(s) on both sides: {sorted(both)}")
    return split
