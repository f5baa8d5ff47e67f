"""The stations' taught calibrations on disk: ``state_dir/teach_in.json``, one versioned
JSON document bound to the production model's sha256, written atomically
(`monitor.config_edit.write_atomically`: the old file or the new one, never a mix).

Loading never raises: a file that is missing gives nothing; a file that cannot be read, is
not ours, has another version or belongs to another model gives nothing and a `Problem`
the daemon reports as an error event (the stations fall back to the artifact's threshold).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from deploy.strict_model import StrictModel
from monitor.config_edit import write_atomically
from monitor.events import Probability, Sha256, StationName, UtcTimestamp, first_errors

TEACH_FILE = "teach_in.json"  # in state_dir
FORMAT = "weldmon-teach-in"
VERSION = 1


class Calibration(StrictModel):
    """One station's accepted teach-in."""

    teach_in_id: str = Field(min_length=1, max_length=64)
    threshold: Probability  # the decision threshold it sets
    raw_threshold: Probability  # before the guards
    bounded: str | None = None  # "lower" / "upper": a guard held it
    target_false_alarm: float = Field(gt=0.0, lt=0.5)
    welds: int = Field(ge=1)
    windows: int = Field(ge=1)
    weld_ids: list[str] = Field(default_factory=list)
    accepted_at: UtcTimestamp
    by: str = Field(min_length=1, max_length=128)
    warning: str | None = None
    # the taught welds' median pooled score, the drift watch's origin (monitor/teach/drift.py);
    # None in a file written before drift was watched: that station is not watched
    reference: Probability | None = None


class _File(StrictModel):
    format: str
    version: int
    model_sha256: Sha256
    stations: dict[StationName, Calibration]


@dataclass(frozen=True)
class Problem:
    """Why the file on disk was not used."""

    kind: str  # "unreadable" (corrupt, foreign, other version) or "other_model"
    message: str


def load(state_dir: Path, model_sha256: str) -> tuple[dict[str, Calibration], Problem | None]:
    """The calibrations stored for `model_sha256`; ({}, Problem) when the file is not usable."""
    path = state_dir / TEACH_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as exc:
        return {}, Problem("unreadable", f"{path}: cannot read ({exc})")
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return {}, Problem("unreadable", f"{path}: not JSON ({exc})")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}, Problem("unreadable", f"{path}: not a weldmon teach-in file")
    if data.get("version") != VERSION:
        return {}, Problem(
            "unreadable", f"{path}: version {data.get('version')!r}, this daemon reads {VERSION}"
        )
    try:
        stored = _File.model_validate(data)
    except ValidationError as exc:
        return {}, Problem("unreadable", f"{path}: {first_errors(exc)}")
    if stored.model_sha256 != model_sha256:
        return {}, Problem(
            "other_model",
            f"{path}: taught with model {stored.model_sha256[:12]}, the model in service is "
            f"{model_sha256[:12]}: the teach-in is void, the artifact's threshold judges",
        )
    return dict(stored.stations), None


def save(state_dir: Path, model_sha256: str, stations: dict[str, Calibration]) -> None:
    """Write the calibrations atomically; ConfigWriteError says why not (nothing changed)."""
    document = _File(format=FORMAT, version=VERSION, model_sha256=model_sha256, stations=stations)
    write_atomically(state_dir / TEACH_FILE, document.model_dump_json(indent=2) + "\n")


def set_aside(state_dir: Path, suffix: str) -> Path | None:
    """Move an unusable file out of the way (kept for a person to look at, never read
    again); the new name, or None when there was none or it cannot be moved."""
    path = state_dir / TEACH_FILE
    target = path.with_name(f"{TEACH_FILE}.{suffix}")
    try:
        path.replace(target)
    except OSError:
        return None
    return target
