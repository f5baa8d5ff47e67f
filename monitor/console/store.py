"""The console's weld history in one SQLite file: results, alerts, daemon errors, reviews.

Blocking: the console calls it from one dedicated thread (``ConsoleDb``), so one connection
serves everything and the event loop never waits on the disk. WAL with
``synchronous=NORMAL``: a power cut may lose the last moments of history, never corrupt it;
the verdicts themselves live in the daemon's outbox and the broker, not here.

Retention deletes welds (and their alerts and errors) older than ``retention_days`` and
beyond ``max_welds``, oldest first. Reviews are kept: they are the provenance of clips
promoted into the training dataset, and they are small.

Timestamps are stored as the wire format (``YYYY-mm-ddTHH:MM:SS.fffZ``), which sorts as text.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from deploy.errors import WeldmonError
from monitor.console.records import Review, StationCounts, WeldFilter, WeldRow
from monitor.events import ErrorEvent, WeldAlert, WeldResult, format_utc, parse_event
from monitor.live.state import Verdict, part_id_of

SCHEMA_VERSION = 1
DEFAULT_RETENTION_DAYS = 365.0  # a year of welds: ~1 KB each, 100k welds ~ 100 MB
DEFAULT_MAX_WELDS = 200_000
MAX_PAGE = 5000  # rows one API call returns at most
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS welds (
    weld_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    station TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    label INTEGER NOT NULL,
    label_name TEXT NOT NULL,
    p_defect REAL NOT NULL,
    threshold REAL NOT NULL,
    degraded INTEGER NOT NULL,
    alerted INTEGER NOT NULL,
    part_id TEXT,
    clip_path TEXT,
    window_s REAL,
    result_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS welds_by_end ON welds (ended_at DESC);
CREATE INDEX IF NOT EXISTS welds_by_station ON welds (prefix, station, ended_at DESC);
CREATE INDEX IF NOT EXISTS welds_by_part ON welds (part_id);
CREATE TABLE IF NOT EXISTS alerts (
    event_id TEXT PRIMARY KEY,
    weld_id TEXT NOT NULL,
    prefix TEXT NOT NULL,
    station TEXT NOT NULL,
    at TEXT NOT NULL,
    p_defect REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_weld ON alerts (weld_id);
CREATE TABLE IF NOT EXISTS errors (
    event_id TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    emitted_at TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    station TEXT,
    weld_id TEXT
);
CREATE TABLE IF NOT EXISTS reviews (
    weld_id TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    station TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('defect', 'good')),
    label_code TEXT NOT NULL,
    label_name TEXT NOT NULL,
    model_label INTEGER NOT NULL,
    alerted INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    reviewed_at TEXT NOT NULL,
    dataset_path TEXT,
    note TEXT
);
CREATE TABLE IF NOT EXISTS mutes (
    prefix TEXT NOT NULL,
    station TEXT NOT NULL,
    muted_by TEXT NOT NULL,
    muted_at TEXT NOT NULL,
    PRIMARY KEY (prefix, station)
);
"""

T = TypeVar("T")


class StoreError(WeldmonError):
    """The history file cannot be opened or is not a console history."""


class WeldStore:
    """The history file. Not thread-safe: one thread at a time (see ``ConsoleDb``)."""

    def __init__(
        self,
        path: Path,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        max_welds: int = DEFAULT_MAX_WELDS,
    ) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self.max_welds = max_welds
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if found is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif found[0] != str(SCHEMA_VERSION):
                raise StoreError(f"{self.path}: history schema {found[0]}, expected 1")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the history: {exc}") from exc

    @property
    def connection(self) -> sqlite3.Connection:
        """The one connection, for tables kept beside the history (`shadow_store`); same
        thread rule as the store's own methods."""
        return self._db

    def close(self) -> None:
        self._db.close()

    # --- writes ----------------------------------------------------------------------------

    def add_result(
        self,
        prefix: str,
        result: WeldResult,
        received_at: datetime,
        alerted: bool,
        window_s: float | None,
    ) -> bool:
        """Insert a result; False if this weld (or event) is already in the history."""
        known_alert = self._db.execute(
            "SELECT 1 FROM alerts WHERE weld_id = ? LIMIT 1", (result.weld_id,)
        ).fetchone()
        cur = self._db.execute(
            "INSERT OR IGNORE INTO welds VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                result.weld_id,
                result.event_id,
                prefix,
                result.station,
                format_utc(result.started_at),
                format_utc(result.ended_at),
                format_utc(received_at),
                result.label,
                result.label_name,
                result.p_defect,
                result.threshold,
                int(result.degraded),
                int(alerted or known_alert is not None),
                part_id_of(result),
                result.clip_path,
                window_s,
                result.to_json().decode(),
            ),
        )
        return cur.rowcount == 1

    def add_alert(self, prefix: str, alert: WeldAlert) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO alerts VALUES (?,?,?,?,?,?)",
            (
                alert.event_id,
                alert.weld_id,
                prefix,
                alert.station,
                format_utc(alert.at),
                alert.p_defect,
            ),
        )
        # An alert delivered after its result (after a reconnect) still marks the weld.
        self._db.execute("UPDATE welds SET alerted = 1 WHERE weld_id = ?", (alert.weld_id,))

    def add_error(self, prefix: str, error: ErrorEvent) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO errors VALUES (?,?,?,?,?,?,?)",
            (
                error.event_id,
                prefix,
                format_utc(error.emitted_at),
                error.code,
                error.message,
                error.station,
                error.weld_id,
            ),
        )

    def add_review(self, review: Review) -> None:
        """Record a review; StoreError if the weld was reviewed already."""
        try:
            self._db.execute(
                "INSERT INTO reviews VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    review.weld_id,
                    review.prefix,
                    review.station,
                    review.verdict,
                    review.label_code,
                    review.label_name,
                    review.model_label,
                    int(review.alerted),
                    review.reviewer,
                    format_utc(review.reviewed_at),
                    review.dataset_path,
                    review.note,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"weld {review.weld_id} is already reviewed") from exc

    def set_mute(self, prefix: str, station: str, muted_by: str | None, at: datetime) -> None:
        """Mute a station's alert banner (kept across restarts), or unmute it (None)."""
        if muted_by is None:
            self._db.execute(
                "DELETE FROM mutes WHERE prefix = ? AND station = ?", (prefix, station)
            )
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO mutes VALUES (?,?,?,?)",
                (prefix, station, muted_by, format_utc(at)),
            )

    def mutes(self) -> list[tuple[str, str, str]]:
        """(prefix, station, muted_by) of every muted station."""
        rows = self._db.execute("SELECT prefix, station, muted_by FROM mutes").fetchall()
        return [(str(p), str(s), str(b)) for p, s, b in rows]

    def apply_retention(self, now: datetime) -> int:
        """Delete welds past the age and count limits (oldest first); returns how many."""
        cutoff = format_utc(now - timedelta(days=self.retention_days))
        deleted = self._db.execute("DELETE FROM welds WHERE ended_at < ?", (cutoff,)).rowcount
        excess = self._count("SELECT COUNT(*) FROM welds") - self.max_welds
        if excess > 0:
            deleted += self._db.execute(
                "DELETE FROM welds WHERE weld_id IN "
                "(SELECT weld_id FROM welds ORDER BY ended_at ASC LIMIT ?)",
                (excess,),
            ).rowcount
        self._db.execute("DELETE FROM alerts WHERE at < ?", (cutoff,))
        self._db.execute("DELETE FROM errors WHERE emitted_at < ?", (cutoff,))
        return deleted

    # --- reads -----------------------------------------------------------------------------

    def _count(self, sql: str, params: tuple = ()) -> int:
        return int(self._db.execute(sql, params).fetchone()[0])

    def welds(self, filters: WeldFilter, limit: int = 100, offset: int = 0) -> list[WeldRow]:
        """Welds matching ``filters``, newest first."""
        where, params = _where(filters)
        rows = self._db.execute(
            "SELECT w.prefix, w.result_json, w.received_at, w.alerted, w.window_s, r.* "
            f"FROM welds w LEFT JOIN reviews r ON r.weld_id = w.weld_id {where} "
            "ORDER BY w.ended_at DESC, w.weld_id DESC LIMIT ? OFFSET ?",
            (*params, max(0, min(limit, MAX_PAGE)), max(0, offset)),
        ).fetchall()
        return [_weld_row(row) for row in rows]

    def count(self, filters: WeldFilter) -> int:
        where, params = _where(filters)
        return self._count(
            f"SELECT COUNT(*) FROM welds w LEFT JOIN reviews r ON r.weld_id = w.weld_id {where}",
            tuple(params),
        )

    def weld(self, weld_id: str) -> WeldRow | None:
        row = self._db.execute(
            "SELECT w.prefix, w.result_json, w.received_at, w.alerted, w.window_s, r.* "
            "FROM welds w LEFT JOIN reviews r ON r.weld_id = w.weld_id WHERE w.weld_id = ?",
            (weld_id,),
        ).fetchone()
        return _weld_row(row) if row is not None else None

    def stations(self) -> list[tuple[str, str]]:
        """Every (prefix, station) in the history."""
        rows = self._db.execute(
            "SELECT DISTINCT prefix, station FROM welds ORDER BY prefix, station"
        ).fetchall()
        return [(str(p), str(s)) for p, s in rows]

    def recent_verdicts(self, prefix: str, station: str, n: int) -> list[Verdict]:
        return [row.verdict() for row in self.welds(WeldFilter(prefix=prefix, station=station), n)]

    def trend_rows(self, since: datetime) -> list[tuple[str, str, str, int, int, str | None]]:
        """(prefix, station, ended_at, label, alerted, review verdict or None) of every weld
        that ended at or after ``since``, oldest first (the trends page buckets them)."""
        rows = self._db.execute(
            "SELECT w.prefix, w.station, w.ended_at, w.label, w.alerted, r.verdict"
            " FROM welds w LEFT JOIN reviews r ON r.weld_id = w.weld_id"
            " WHERE w.ended_at >= ? ORDER BY w.ended_at",
            (format_utc(since),),
        ).fetchall()
        return [(str(p), str(s), str(e), int(lb), int(a), v) for p, s, e, lb, a, v in rows]

    def station_counts(self) -> list[StationCounts]:
        """Welds, flagged, reviewed, confirmed and false alarms per station (all history)."""
        rows = self._db.execute(
            "SELECT w.prefix, w.station, COUNT(*),"
            " SUM(w.label = 1 OR w.alerted = 1),"
            " SUM(r.weld_id IS NOT NULL),"
            " SUM(r.verdict = 'defect' AND (w.label = 1 OR w.alerted = 1)),"
            " SUM(r.verdict = 'good' AND (w.label = 1 OR w.alerted = 1)),"
            " SUM(r.verdict = 'defect' AND w.label = 0 AND w.alerted = 0)"
            " FROM welds w LEFT JOIN reviews r ON r.weld_id = w.weld_id"
            " GROUP BY w.prefix, w.station ORDER BY w.prefix, w.station"
        ).fetchall()
        counts = {
            (p, s): StationCounts(p, s, n, f or 0, rv or 0, c or 0, fa or 0, m or 0)
            for p, s, n, f, rv, c, fa, m in rows
        }
        # Reviews outlive retention: count false alarms of welds already deleted too.
        for p, s, fa in self._db.execute(
            "SELECT prefix, station, SUM(verdict = 'good' AND (model_label = 1 OR alerted = 1))"
            " FROM reviews WHERE weld_id NOT IN (SELECT weld_id FROM welds)"
            " GROUP BY prefix, station"
        ).fetchall():
            entry = counts.setdefault((p, s), StationCounts(p, s))
            entry.false_alarms += fa or 0
        return [counts[k] for k in sorted(counts)]

    def recent_errors(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT prefix, emitted_at, code, message, station, weld_id FROM errors"
            " ORDER BY emitted_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
        keys = ("prefix", "emitted_at", "code", "message", "station", "weld_id")
        return [dict(zip(keys, row, strict=True)) for row in rows]


def _where(f: WeldFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("w.prefix", f.prefix),
        ("w.station", f.station),
        ("w.label", f.label),
        ("w.part_id", f.part_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if f.since is not None:
        clauses.append("w.ended_at >= ?")
        params.append(format_utc(f.since))
    if f.until is not None:
        clauses.append("w.ended_at < ?")
        params.append(format_utc(f.until))
    if f.reviewed is not None:
        clauses.append("r.weld_id IS NOT NULL" if f.reviewed else "r.weld_id IS NULL")
    if f.flagged is not None:
        flagged = "(w.label = 1 OR w.alerted = 1)"
        clauses.append(flagged if f.flagged else f"NOT {flagged}")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _weld_row(row: tuple) -> WeldRow:
    prefix, result_json, received_at, alerted, window_s = row[:5]
    result = parse_event(result_json.encode())
    if not isinstance(result, WeldResult):
        raise StoreError(f"history row for {prefix} is not a weld result")
    review = None
    if row[5] is not None:
        (weld_id, r_prefix, station, verdict, code, name, model_label, r_alerted) = row[5:13]
        reviewer, reviewed_at, dataset_path, note = row[13:17]
        review = Review(
            weld_id,
            r_prefix,
            station,
            verdict,
            code,
            name,
            int(model_label),
            bool(r_alerted),
            reviewer,
            datetime.fromisoformat(reviewed_at),
            dataset_path,
            note,
        )
    return WeldRow(prefix, result, received_at, bool(alerted), window_s, review)


class ConsoleDb:
    """The store on its own thread: ``await db.call(WeldStore.method, *args)``."""

    def __init__(self, store: WeldStore) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-db")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self.store, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.store.close()
