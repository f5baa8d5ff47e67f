"""Which welds keep a clip, and which stored clips retention deletes: pure decisions.

``monitor.ops.clips`` does the file work and asks this module; nothing here touches a disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from deploy.strict_model import StrictModel
from monitor.events import WeldResult

BYTES_PER_MB = 1024 * 1024
SECONDS_PER_DAY = 86_400.0
DEFAULT_MAX_COUNT = 2000  # ~2000 welds x 40 s x 32 kB/s FLAC ~ 1-2 GB at most
DEFAULT_MAX_AGE_DAYS = 90.0  # a quarter: long enough for a weekly review to catch up
DEFAULT_MIN_FREE_MB = 1024  # leave 1 GiB for the outbox, logs and the OS

ClipPolicy = Literal["all", "defect", "none"]


class ClipsConfig(StrictModel):
    """The ``clips:`` section: which welds are kept and how long.

    ``policy``: ``defect`` keeps welds judged defect, ``all`` every weld, ``none`` nothing.
    ``max_count``: unreviewed clips kept at most. ``max_age_days``: older clips are deleted.
    ``min_free_mb``: oldest clips are deleted while the disk has less free space than this.
    """

    policy: ClipPolicy = "defect"
    max_count: int = Field(DEFAULT_MAX_COUNT, ge=1)
    max_age_days: float = Field(DEFAULT_MAX_AGE_DAYS, gt=0.0)
    min_free_mb: float = Field(DEFAULT_MIN_FREE_MB, ge=0.0)


def wants_clip(policy: ClipPolicy, result: WeldResult) -> bool:
    """Whether ``policy`` keeps the audio of the weld judged by ``result``."""
    if policy == "all":
        return True
    if policy == "defect":
        return result.label == 1
    return False


@dataclass(frozen=True)
class StoredClip:
    """One clip folder on disk, as retention sees it."""

    folder: Path
    mtime: float  # POSIX seconds of the FLAC (set when written)
    size_bytes: int


@dataclass(frozen=True)
class RetentionPlan:
    """Which clips to delete and why (oldest first within each reason)."""

    by_count: tuple[StoredClip, ...]
    by_age: tuple[StoredClip, ...]
    by_disk: tuple[StoredClip, ...]
    short_of_free_bytes: int  # still missing after every deletable clip is gone (0: none)

    @property
    def deletions(self) -> tuple[StoredClip, ...]:
        """Every clip the plan deletes."""
        return self.by_age + self.by_count + self.by_disk


def plan_retention(
    clips: Sequence[StoredClip],
    *,
    settings: ClipsConfig,
    now: float,
    free_bytes: int,
    keep: Path | None,
) -> RetentionPlan:
    """Pure: decide deletions. Age first, then count, then free disk, each oldest first;
    ``keep`` (the clip just written) is never deleted."""
    ordered = sorted(clips, key=lambda c: (c.mtime, c.folder.name))
    candidates = [c for c in ordered if c.folder != keep]
    max_age_s = settings.max_age_days * SECONDS_PER_DAY
    by_age = [c for c in candidates if now - c.mtime > max_age_s]
    remaining = [c for c in candidates if c not in by_age]
    excess = len(ordered) - len(by_age) - settings.max_count
    by_count = remaining[: max(excess, 0)]
    remaining = remaining[len(by_count) :]
    need = int(settings.min_free_mb * BYTES_PER_MB)
    free = free_bytes + sum(c.size_bytes for c in by_age + by_count)
    by_disk = []
    for clip in remaining:
        if free >= need:
            break
        by_disk.append(clip)
        free += clip.size_bytes
    return RetentionPlan(tuple(by_count), tuple(by_age), tuple(by_disk), max(need - free, 0))
