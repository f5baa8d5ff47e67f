"""The rows of the console's history, as the store returns them and the web and API read
them: a weld (`WeldRow`), a person's review (`Review`), per-station review figures
(`StationCounts`) and the history filters (`WeldFilter`). Plain values; the SQL is
`monitor.console.store`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitor.events import WeldResult, format_utc
from monitor.live.state import Verdict, part_id_of


@dataclass(frozen=True)
class WeldFilter:
    """History filters; every field is optional. Dates compare on ``ended_at``."""

    prefix: str | None = None
    station: str | None = None
    label: int | None = None
    part_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    reviewed: bool | None = None
    flagged: bool | None = None  # judged defect or alerted


@dataclass(frozen=True)
class Review:
    """A person's verdict on one weld, and where its clip went."""

    weld_id: str
    prefix: str
    station: str
    verdict: str  # "defect" or "good"
    label_code: str
    label_name: str
    model_label: int
    alerted: bool
    reviewer: str
    reviewed_at: datetime
    dataset_path: str | None = None  # relative to the dataset root
    note: str | None = None

    @property
    def false_alarm(self) -> bool:
        return self.verdict == "good" and (self.model_label == 1 or self.alerted)

    def as_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "label_code": self.label_code,
            "label_name": self.label_name,
            "reviewer": self.reviewer,
            "reviewed_at": format_utc(self.reviewed_at),
            "dataset_path": self.dataset_path,
            "false_alarm": self.false_alarm,
            "note": self.note,
        }


@dataclass(frozen=True)
class WeldRow:
    """One weld of the history: the result as published, plus what the console added."""

    prefix: str
    result: WeldResult
    received_at: str
    alerted: bool
    window_s: float | None
    review: Review | None = None

    @property
    def weld_id(self) -> str:
        return self.result.weld_id

    @property
    def part_id(self) -> str | None:
        return part_id_of(self.result)

    @property
    def flagged(self) -> bool:
        return self.result.label == 1 or self.alerted

    def as_json(self) -> dict[str, Any]:
        """The API's view: the result event exactly as published, plus ``console``."""
        data = json.loads(self.result.to_json())
        data["console"] = {
            "prefix": self.prefix,
            "received_at": self.received_at,
            "alerted": self.alerted,
            "window_s": self.window_s,
            "review": self.review.as_json() if self.review else None,
        }
        return data

    def verdict(self) -> Verdict:
        r = self.result
        return Verdict(
            r.weld_id,
            r.ended_at,
            r.label,
            r.label_name,
            r.p_defect,
            r.threshold,
            r.duration_s,
            self.alerted,
            tuple(r.degraded_reasons),
            self.part_id,
            r.replay,
        )


@dataclass
class StationCounts:
    """Per-station review figures for the review page."""

    prefix: str
    station: str
    welds: int = 0
    flagged: int = 0
    reviewed: int = 0
    confirmed: int = 0
    false_alarms: int = 0
    missed: int = 0  # judged good, no alert, reviewed as defect
    extra: dict[str, int] = field(default_factory=dict)
