"""Clip files for the browser, and promotion of a reviewed clip into the training dataset.

Every path here comes from outside: a result's ``clip_path``, ``station`` and ``weld_id`` from
the broker, a config folder and label code from the browser. None is trusted. A file is
served or moved only when its fully resolved path (symlinks followed) lies inside the
``--clips`` or ``--dataset`` folder; anything else is refused and counted.

Where a weld's clip is looked for, in order:

1. the result's ``clip_path``, if it resolves inside ``--clips`` to the weld's own clip,
   ``<weld_id>/<weld_id>.flac`` (the console runs on the monitor box, or sees its clips
   folder at the same path). A result may not claim another weld's clip: a ``clip_path``
   naming a file of another weld id is refused (counted), or reviewing this weld would move
   the other weld's clip into the dataset;
2. the clip layout under ``--clips``: ``unreviewed/<station>/<weld_id>/<weld_id>.flac``
   (the console sees the folder at another path, e.g. a read-only mount).

A ``clip_path`` outside ``--clips`` is refused (counted, shown on the weld's page), and only
the layout is tried.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from deploy.dataset_layout import (
    AUDIO_SUFFIX,
    SIDECAR_SUFFIX,
    ClipError,
    clip_audio_path,
    promote_clip,
    top_folder,
)
from monitor.events import STATION_PATTERN

# A weld id as the daemon makes it ({station}-{stamp}-{hex}), and nothing that could be a
# path: one level, no leading dot, no separators.
SAFE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,159}$"
CONFIG_FOLDER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class UnsafePathError(ClipError):
    """A path from the broker or the browser points outside the folder it must stay in."""


def is_safe_name(text: str) -> bool:
    """One plain path component (no '/', no '..', no leading '.')."""
    return bool(re.fullmatch(SAFE_NAME_PATTERN, text)) and ".." not in text


def check_config_folder(name: str) -> None:
    """Refuse (UnsafePathError) a dataset config folder that is not one plain name."""
    if not re.fullmatch(CONFIG_FOLDER_PATTERN, name) or ".." in name:
        raise UnsafePathError(
            f"config folder must be one plain name (letters, digits, '_', '.', '-'; "
            f"at most 128), got {name!r}"
        )


def is_own_clip(audio: Path, weld_id: str) -> bool:
    """Whether ``audio`` is the clip layout's file of ``weld_id``: ``<weld_id>/<weld_id>.flac``."""
    return audio.suffix == AUDIO_SUFFIX and audio.stem == weld_id == audio.parent.name


def inside(root: Path, candidate: Path) -> Path:
    """``candidate`` fully resolved, if it lies inside ``root`` (also resolved); raises
    UnsafePathError otherwise. Resolving first defeats ``..`` and symlinks alike."""
    base = root.resolve()
    resolved = (base / candidate).resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise UnsafePathError(f"{candidate} is outside {base}")
    return resolved


@dataclass(frozen=True)
class ClipLookup:
    """Where a weld's audio is, or why there is none."""

    path: Path | None
    origin: str  # "clip_path", "layout", "dataset" or "none"
    refused: str | None = None  # why the result's clip_path was not used


@dataclass
class ClipFolders:
    """The ``--clips`` and ``--dataset`` folders (either may be absent) and refusal counts."""

    clips: Path | None
    dataset: Path | None
    counters: dict[str, int] = field(
        default_factory=lambda: {"clip_path_refused": 0, "unsafe_name_refused": 0}
    )

    def find_clip(
        self, station: str, weld_id: str, clip_path: str | None, dataset_path: str | None
    ) -> ClipLookup:
        """The weld's audio: the promoted copy in the dataset if it was reviewed, else the
        daemon's clip (see the module docstring)."""
        if dataset_path is not None and self.dataset is not None:
            try:
                found = inside(self.dataset, Path(dataset_path))
            except UnsafePathError:
                found = None
            if found is not None and found.is_file():
                return ClipLookup(found, "dataset")
        if self.clips is None:
            return ClipLookup(None, "none", "no --clips folder" if clip_path else None)
        refused = None
        if clip_path:
            try:
                candidate = inside(self.clips, Path(clip_path))
            except UnsafePathError:
                self.counters["clip_path_refused"] += 1
                refused = f"clip_path {clip_path!r} is outside the clips folder: refused"
            else:
                if not is_own_clip(candidate, weld_id):
                    self.counters["clip_path_refused"] += 1
                    refused = f"clip_path {clip_path!r} is not this weld's clip: refused"
                elif candidate.is_file():
                    return ClipLookup(candidate, "clip_path")
        if not re.fullmatch(STATION_PATTERN, station) or not is_safe_name(weld_id):
            self.counters["unsafe_name_refused"] += 1
            return ClipLookup(None, "none", refused or "unsafe station or weld id: refused")
        try:
            candidate = inside(self.clips, clip_audio_path(Path(), station, weld_id))
        except UnsafePathError:
            self.counters["unsafe_name_refused"] += 1
            return ClipLookup(None, "none", refused or "clip layout path escapes: refused")
        if candidate.is_file():
            return ClipLookup(candidate, "layout", refused)
        return ClipLookup(None, "none", refused)

    def promote(self, audio: Path, config_folder: str, label_code: str) -> str:
        """Move the clip folder holding ``audio`` into the dataset; returns the new FLAC's
        path relative to the dataset root. Raises ClipError (UnsafePathError for paths)."""
        if self.dataset is None:
            raise ClipError("the console was started without --dataset: nowhere to put clips")
        if self.clips is None:
            raise ClipError("the console was started without --clips")
        check_config_folder(config_folder)
        resolved = inside(self.clips, audio)
        folder = resolved.parent
        if folder == self.clips.resolve() or resolved.stem != folder.name:
            raise UnsafePathError(f"{audio} is not in a clip folder (<weld_id>/<weld_id>.flac)")
        top = top_folder(label_code)
        inside(self.dataset, Path(top) / config_folder)  # the target stays in the dataset
        self.dataset.mkdir(parents=True, exist_ok=True)
        moved = promote_clip(folder, self.dataset, config_folder, label_code)
        return str(inside(self.dataset, moved).relative_to(self.dataset.resolve()))


def sidecar_window_probs(audio: Path) -> list[float] | None:
    """Every window's p_defect from the sidecar beside a clip (found by `find_clip`, so
    inside a served folder), or None if it has none or cannot be read: the daemon keeps them
    there even when its events leave ``window_probs`` out."""
    try:
        data = json.loads(audio.with_suffix(SIDECAR_SUFFIX).read_text())
        probs = data.get("window_probs")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(probs, list) or not probs:
        return None
    if not all(isinstance(p, int | float) and math.isfinite(p) and 0 <= p <= 1 for p in probs):
        return None
    return [float(p) for p in probs]


def default_config_folder(prefix: str, station: str, started_at: datetime) -> str:
    """The dataset config folder a reviewed clip goes to: one per daemon, station and day,
    the closest thing to the dataset's "one recording session" (``weldmon_cell1_20260302``)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", prefix).strip("-.") or "weldmon"
    return f"{slug}_{station}_{started_at.strftime('%Y%m%d')}"
