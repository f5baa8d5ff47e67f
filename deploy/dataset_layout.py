"""The labelled dataset's layout and the review tree that feeds it, declared once for
training (indexing), the daemon (writing defect clips) and review tools (promoting them)::

    <dataset>/good_weld/<config_folder>/<run_id>/<run_id>.flac
    <dataset>/defect_data_weld/<config_folder>/<run_id>/<run_id>.flac
    <state_dir>/clips/unreviewed/<station>/<weld_id>/<weld_id>.flac (+ .json sidecar)

A run id ends in its two-digit label code (``00`` good_weld, ``02`` burn_through, ...). A
reviewed clip becomes a run by `promote_clip` (``weldmon clips promote``, the web console):
its folder and files are renamed ``<weld_id>-<label code>`` and moved into the dataset. Pure
standard library: review tools import it without numpy or torch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from deploy.errors import WeldmonError

GOOD_TOP_FOLDER = "good_weld"
DEFECT_TOP_FOLDER = "defect_data_weld"
TOP_FOLDERS = (GOOD_TOP_FOLDER, DEFECT_TOP_FOLDER)  # the dataset's two labelled trees
GOOD_CODE = "00"
LABEL_CODE_LENGTH = 2  # a run id's last two characters
LABEL_CODES = {
    GOOD_CODE: "good_weld",
    "01": "excessive_penetration",
    "02": "burn_through",
    "06": "overlap",
    "07": "lack_of_fusion",
    "08": "excessive_convexity",
    "11": "crater_cracks",
}
AUDIO_SUFFIX = ".flac"


def top_folder(label_code: str) -> str:
    """The labelled tree a run with ``label_code`` belongs in."""
    return GOOD_TOP_FOLDER if label_code == GOOD_CODE else DEFECT_TOP_FOLDER


# The review tree under the daemon's state_dir.
CLIPS_FOLDER = "clips"  # under state_dir
UNREVIEWED_FOLDER = "unreviewed"  # the only tree clip retention ever deletes from
SIDECAR_SUFFIX = ".json"  # the result event and window probabilities beside each clip


class ClipError(WeldmonError):
    """A clip could not be written, read or promoted (disk full, permissions, bad input)."""


def clip_folder(clips_dir: Path, station: str, weld_id: str) -> Path:
    """Where one weld's clip lives (the folder holds ``<weld_id>.flac`` and ``.json``)."""
    return clips_dir / UNREVIEWED_FOLDER / station / weld_id


def clip_audio_path(clips_dir: Path, station: str, weld_id: str) -> Path:
    """The FLAC path of one weld's clip; the daemon can put it in the result event before
    the write finishes."""
    return clip_folder(clips_dir, station, weld_id) / f"{weld_id}{AUDIO_SUFFIX}"


def promote_clip(clip_dir: Path, dataset_root: Path, config_folder: str, label_code: str) -> Path:
    """Move a reviewed clip into a training dataset tree; returns the new FLAC path.

    ``label_code`` is the reviewer's verdict as the dataset writes it (``00`` good_weld,
    ``02`` burn_through, ...). The run id becomes ``<weld_id>-<label_code>``.
    """
    if len(label_code) != LABEL_CODE_LENGTH or not label_code.isdigit():
        raise ClipError(f"label_code must be two digits like '00' or '07', got {label_code!r}")
    if not config_folder or "/" in config_folder or config_folder.startswith("."):
        raise ClipError(f"config_folder must be one plain folder name, got {config_folder!r}")
    weld_id = clip_dir.name
    audio = clip_dir / f"{weld_id}{AUDIO_SUFFIX}"
    if not audio.is_file():
        raise ClipError(f"{clip_dir}: no {audio.name} in it (not a clip folder)")
    run_id = f"{weld_id}-{label_code}"
    target = dataset_root / top_folder(label_code) / config_folder / run_id
    if target.exists():
        raise ClipError(f"{target} already exists")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(clip_dir, target)
        for suffix in (AUDIO_SUFFIX, SIDECAR_SUFFIX):
            old = target / f"{weld_id}{suffix}"
            if old.exists():
                old.rename(target / f"{run_id}{suffix}")
    except OSError as exc:
        raise ClipError(f"cannot move {clip_dir} to {target}: {exc}") from exc
    return target / f"{run_id}{AUDIO_SUFFIX}"
