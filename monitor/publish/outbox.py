"""Durable outbox: every event that must reach the broker is on disk before it is published.

Ownership: the outbox stores the exact payload bytes (original ``event_id`` and timestamps), so
a replayed event after a crash or an outage is byte-identical to the first try. A row is
removed only by ``ack(seq)``, which the publisher calls after the broker's PUBACK. Delivery is
therefore at-least-once: a crash between PUBACK and ``ack`` re-sends one event, and consumers
deduplicate on ``event_id``.

Durability: SQLite in WAL mode with ``synchronous=FULL``; ``add`` returns only after the row is
committed and fsynced, so it survives SIGKILL and power loss.

Bound policy (``max_events``), when an add finds the box full:

1. low-priority rows (progress) are dropped first, oldest first, each counted;
2. a new low-priority event that finds no low-priority row to evict is itself dropped (counted);
3. high-priority events (start, alert, result, error) are never dropped: the box grows past the
   bound, every such add logs an error and counts ``over_bound``. A verdict is the product of
   the whole system and cannot be recomputed once the audio is gone, while the rows are small
   (about 1 KB; 10,000 results are about 10 MB), so a full disk is a far smaller risk than a
   silently lost result. The error log and the ``depth`` gauge tell the operator the broker has
   been unreachable for long.

Thread safety: methods are synchronous and guarded by one lock, so the event-loop thread (the
usual caller) and any other thread may use the same outbox.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from deploy.errors import WeldmonError

SCHEMA_USER_VERSION = 1  # PRAGMA user_version of the table layout below
# How long a second process (or a checkpoint) may hold the write lock before add() fails.
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: insertion order
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    event_id   TEXT    NOT NULL UNIQUE,
    priority   INTEGER NOT NULL,
    created_at REAL    NOT NULL                    -- unix time, seconds
);
CREATE INDEX IF NOT EXISTS outbox_priority_seq ON outbox (priority, seq);
"""

log = structlog.get_logger(__name__)


class OutboxError(WeldmonError):
    """The outbox database cannot be opened, read or written."""


class Priority(IntEnum):
    """Which events the bound policy may drop: LOW may go, HIGH never does."""

    LOW = 0  # progress
    HIGH = 1  # start, alert, result, error


@dataclass(frozen=True)
class OutboxItem:
    """One stored message, exactly as it will be published."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    event_id: str
    priority: Priority
    created_at: float


@dataclass
class OutboxCounters:
    """Monotonic counters for metrics (read them, never reset them)."""

    added: int = 0
    acked: int = 0
    duplicates: int = 0  # add() of an event_id already stored: kept once
    dropped_low_priority: int = 0  # low-priority rows evicted or refused by the bound
    over_bound: int = 0  # high-priority adds that grew the box past max_events

    def as_dict(self) -> dict[str, int]:
        """The counters by name, for a metrics exporter."""
        return asdict(self)


class Outbox:
    """SQLite-backed FIFO of messages awaiting a broker acknowledgement.

    Args:
        path: the database file (created with its folder if missing).
        max_events: the bound; see the module docstring for what happens when it is reached.
    """

    def __init__(self, path: Path, max_events: int) -> None:
        if max_events < 1:
            raise OutboxError(f"max_events must be >= 1, got {max_events}")
        self.path = Path(path)
        self.max_events = max_events
        self.counters = OutboxCounters()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per call.
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OutboxError(f"{self.path}: cannot enable WAL (journal_mode is {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_USER_VERSION}")
            self._depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc

    # -- writing ---------------------------------------------------------------------------

    def add(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        event_id: str,
        priority: Priority = Priority.HIGH,
    ) -> int:
        """Store one message durably and return its sequence number.

        Returns the existing seq if ``event_id`` is already stored, and 0 when a low-priority
        message is refused by the bound (counted in ``dropped_low_priority``).
        """
        priority = Priority(priority)
        with self._lock, self._transaction():
            row = self._db.execute(
                "SELECT seq FROM outbox WHERE event_id = ?", (event_id,)
            ).fetchone()
            if row is not None:
                self.counters.duplicates += 1
                return int(row[0])
            if self._depth >= self.max_events and not self._make_room(priority, topic, event_id):
                return 0
            cursor = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, event_id, priority, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (topic, payload, qos, int(retain), event_id, int(priority), time.time()),
            )
            self._depth += 1
            self.counters.added += 1
            return int(cursor.lastrowid or 0)

    def _make_room(self, priority: Priority, topic: str, event_id: str) -> bool:
        """Apply the bound policy; False means the new message is dropped."""
        oldest_low = self._db.execute(
            "SELECT seq, topic, event_id FROM outbox WHERE priority = ? ORDER BY seq LIMIT 1",
            (int(Priority.LOW),),
        ).fetchone()
        if oldest_low is not None:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (oldest_low[0],))
            self._depth -= 1
            self.counters.dropped_low_priority += 1
            log.warning(
                "outbox.dropped_low_priority",
                topic=oldest_low[1],
                event_id=oldest_low[2],
                depth=self._depth,
                max_events=self.max_events,
            )
            return True
        if priority == Priority.LOW:
            self.counters.dropped_low_priority += 1
            log.warning("outbox.refused_low_priority", topic=topic, event_id=event_id)
            return False
        self.counters.over_bound += 1
        log.error(
            "outbox.over_bound",
            topic=topic,
            event_id=event_id,
            depth=self._depth + 1,
            max_events=self.max_events,
            note="high-priority events are never dropped; the broker is unreachable for long",
        )
        return True

    def ack(self, seq: int) -> None:
        """Remove a message the broker has acknowledged (unknown seq: no-op)."""
        with self._lock, self._transaction():
            deleted = self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount
            self._depth -= deleted
            self.counters.acked += deleted

    # -- reading ---------------------------------------------------------------------------

    def pending(self, limit: int) -> list[OutboxItem]:
        """Up to ``limit`` stored messages, oldest first (insertion order)."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, topic, payload, qos, retain, event_id, priority, created_at"
                    " FROM outbox ORDER BY seq LIMIT ?",
                    (limit,),
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read outbox {self.path}: {exc}") from exc
        return [
            OutboxItem(
                seq=r[0],
                topic=r[1],
                payload=bytes(r[2]),
                qos=r[3],
                retain=bool(r[4]),
                event_id=r[5],
                priority=Priority(r[6]),
                created_at=r[7],
            )
            for r in rows
        ]

    @property
    def depth(self) -> int:
        """Messages stored and not yet acknowledged."""
        return self._depth

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (idempotent). Stored rows stay for the next open."""
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot close outbox {self.path}: {exc}") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; on any error ROLLBACK, resync the depth, and convert
        sqlite3 errors to OutboxError."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                self._depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot write outbox {self.path}: {exc}") from exc
