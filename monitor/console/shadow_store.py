"""Shadow verdicts in the console's history file, beside the production results, and the
comparison the ``/compare`` page shows.

The functions take the `WeldStore` and run on its one database thread (``ConsoleDb.call``),
like the store's own methods; the table is created on first use. A shadow verdict is kept
by weld_id (the first one wins: delivery is at-least-once) and joins the production result
and the review of the same weld when the page is drawn, so it may arrive before or after
either. Retention follows the welds: a shadow verdict without its weld is not shown.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime

from monitor.console.store import WeldStore
from monitor.events import format_utc
from monitor.events.shadow import ShadowResult

MAX_DIFFERING = 200  # differing welds listed on the page, newest first

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_results (
    weld_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    station TEXT NOT NULL,
    received_at TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    production_model_sha256 TEXT NOT NULL,
    label INTEGER NOT NULL,
    p_defect REAL NOT NULL,
    production_label INTEGER NOT NULL,
    production_p_defect REAL NOT NULL,
    agree INTEGER,
    complete INTEGER NOT NULL,
    result_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_by_station ON shadow_results (prefix, station);
"""


def _db(store: WeldStore) -> sqlite3.Connection:
    db = store.connection
    db.executescript(_SCHEMA)  # IF NOT EXISTS: a no-op after the first call
    return db


def add_shadow(store: WeldStore, prefix: str, result: ShadowResult, received: datetime) -> bool:
    """Keep one shadow verdict; False when this weld already has one (a duplicate)."""
    cursor = _db(store).execute(
        "INSERT OR IGNORE INTO shadow_results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            result.weld_id,
            result.event_id,
            prefix,
            result.station,
            format_utc(received),
            result.model_sha256,
            result.production_model_sha256,
            result.label,
            result.p_defect,
            result.production_label,
            result.production_p_defect,
            None if result.agree is None else int(result.agree),
            int(result.complete),
            result.to_json().decode(),
        ),
    )
    return cursor.rowcount == 1


@dataclass
class ModelScore:
    """One model's errors against the reviews filed in the console."""

    false_alarms: int = 0  # judged defect, reviewed good
    misses: int = 0  # judged good, reviewed defect


@dataclass
class StationComparison:
    """Shadow against production at one station (or overall: station ``*``)."""

    prefix: str
    station: str
    compared: int = 0  # complete shadow verdicts whose weld is in the history
    agreed: int = 0
    reviewed: int = 0  # of those, welds with a review
    production: ModelScore = field(default_factory=ModelScore)
    shadow: ModelScore = field(default_factory=ModelScore)
    candidates: set[str] = field(default_factory=set)  # shadow sha256 seen

    @property
    def agreement(self) -> float | None:
        """Share of compared welds with the same verdict (None before any)."""
        return self.agreed / self.compared if self.compared else None

    def add(
        self, sha: str, agree: bool, label: int, production_label: int, truth: int | None
    ) -> None:
        self.compared += 1
        self.agreed += int(agree)
        self.candidates.add(sha)
        if truth is None:
            return
        self.reviewed += 1
        for score, said in ((self.production, production_label), (self.shadow, label)):
            score.false_alarms += int(said == 1 and truth == 0)
            score.misses += int(said == 0 and truth == 1)


@dataclass(frozen=True)
class DifferingWeld:
    """A weld the two models judged differently."""

    weld_id: str
    prefix: str
    station: str
    ended_at: str
    production_label: int
    production_p_defect: float
    label: int
    p_defect: float
    reviewed: str | None  # the review's verdict (defect / good), if any


@dataclass
class Comparison:
    """Everything the page shows."""

    stations: list[StationComparison]
    overall: StationComparison
    differing: list[DifferingWeld]
    candidate: dict[str, str]  # daemon prefix -> the shadow sha256 of its newest verdict

    def figures(self, prefix: str) -> dict[str, float | int | None]:
        """One daemon's figures over its stations (what a promote request carries)."""
        total = StationComparison(prefix, "*")
        for one in self.stations:
            if one.prefix == prefix:
                total.compared += one.compared
                total.agreed += one.agreed
                total.reviewed += one.reviewed
                for mine, theirs in (
                    (total.production, one.production),
                    (total.shadow, one.shadow),
                ):
                    mine.false_alarms += theirs.false_alarms
                    mine.misses += theirs.misses
        return {
            "console_compared": total.compared,
            "console_agreement": total.agreement,
            "console_reviewed": total.reviewed,
            "console_production_false_alarms": total.production.false_alarms,
            "console_production_misses": total.production.misses,
            "console_shadow_false_alarms": total.shadow.false_alarms,
            "console_shadow_misses": total.shadow.misses,
        }


def comparison(store: WeldStore) -> Comparison:
    """Agreement, each model's false alarms and misses against the reviews, per station and
    overall, and the differing welds (newest first) over the complete shadow verdicts."""
    rows = (
        _db(store)
        .execute(
            """SELECT s.prefix, s.station, s.model_sha256, s.agree, s.label, s.p_defect,
                  s.production_label, s.production_p_defect, s.weld_id, w.ended_at, r.verdict
           FROM shadow_results s JOIN welds w ON w.weld_id = s.weld_id
           LEFT JOIN reviews r ON r.weld_id = s.weld_id
           WHERE s.complete = 1 AND s.agree IS NOT NULL
           ORDER BY w.ended_at DESC"""
        )
        .fetchall()
    )
    by_station: dict[tuple[str, str], StationComparison] = {}
    overall = StationComparison("*", "*")
    differing: list[DifferingWeld] = []
    candidate: dict[str, str] = {}
    for prefix, station, sha, agree, label, p, prod_label, prod_p, weld_id, ended, verdict in rows:
        truth = None if verdict is None else int(verdict == "defect")
        candidate.setdefault(prefix, sha)  # rows come newest first
        one = by_station.setdefault((prefix, station), StationComparison(prefix, station))
        for target in (one, overall):
            target.add(sha, bool(agree), label, prod_label, truth)
        if not agree and len(differing) < MAX_DIFFERING:
            differing.append(
                DifferingWeld(
                    weld_id, prefix, station, ended, prod_label, prod_p, label, p, verdict
                )
            )
    stations = [by_station[k] for k in sorted(by_station)]
    return Comparison(stations, overall, differing, candidate)
