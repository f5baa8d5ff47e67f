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

Open welds: the outbox also knows which welds have a start and no result yet. A stored
``weld_start`` opens a row in ``open_welds`` and the stored ``weld_result`` of the same weld
removes it, in the same transaction as the event's own row; each judged window updates the
row's verdict so far (`note_progress`, committed without an fsync: it survives the process
being killed, not a power loss). After a SIGKILL or a watchdog abort the next daemon reads
them (`open_welds`) and publishes their results as interrupted
(`monitor/publish/interrupted.py`).

Thread safety: methods are synchronous and guarded by one lock, so the event-loop thread (the
usual caller) and any other thread may use the same outbox.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from deploy.errors import WeldmonError

SCHEMA_USER_VERSION = 2  # PRAGMA user_version of the table layout below (2: open_welds)
# How long a write waits for the lock before it fails. This process is the only writer, so a
# lock held for longer is a fault (another process, a failing disk): the caller keeps the
# event in memory and retries (monitor/publish/spool.py) rather than block the event loop.
BUSY_TIMEOUT_S = 1.0

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
CREATE TABLE IF NOT EXISTS open_welds (
    weld_id      TEXT PRIMARY KEY,
    start        BLOB NOT NULL,                   -- the weld_start payload
    opened_at    REAL NOT NULL,                   -- unix time, seconds
    n_windows    INTEGER NOT NULL DEFAULT 0,      -- judged so far (the latest progress)
    p_defect     REAL,                            -- rolling p_defect over them
    window_p_max REAL,
    elapsed_s    REAL                             -- audio from the start to that window's end
);
"""

log = structlog.get_logger(__name__)


class OutboxError(WeldmonError):
    """The outbox database cannot be opened, read or written."""


class OutboxOpenError(OutboxError):
    """The outbox cannot be opened at all (not a database, corrupt, unreadable): an operator
    must look at the file, so the daemon stops with exit code 2 instead of restarting."""


class Priority(IntEnum):
    """Which events the bound policy may drop: LOW may go, HIGH never does."""

    LOW = 0  # progress
    HIGH = 1  # start, alert, result, error


@dataclass(frozen=True)
class NewMessage:
    """A message to store (`Outbox.store`)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    event_id: str
    priority: Priority = Priority.HIGH
    created_at: float | None = None  # unix s; None: when stored
    opens_weld: str | None = None  # a weld_start: this weld_id now has a start, no result
    closes_weld: str | None = None  # a weld_result: this weld_id is closed


@dataclass(frozen=True)
class OpenWeldRecord:
    """A weld whose start was stored and whose result was not, with its verdict so far."""

    weld_id: str
    start: bytes  # the weld_start payload
    n_windows: int
    p_defect: float | None
    window_p_max: float | None
    elapsed_s: float | None


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
            # Written only when it differs: a write needs the lock, and another process may
            # hold it while we start (reads still work in WAL mode).
            if self._db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_USER_VERSION:
                self._db.execute(f"PRAGMA user_version={SCHEMA_USER_VERSION}")
            self._depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(Exception):
                self._db.close()
            raise OutboxOpenError(
                f"cannot open outbox {self.path}: {exc} (if it is corrupt, move it aside; "
                "the events in it are then not published)"
            ) from exc

    # -- writing ---------------------------------------------------------------------------

    def add(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        event_id: str,
        priority: Priority = Priority.HIGH,
        created_at: float | None = None,
    ) -> int:
        """Store one message durably and return its sequence number.

        Returns the existing seq if ``event_id`` is already stored, and 0 when a low-priority
        message is refused by the bound (counted in ``dropped_low_priority``). `created_at`
        (unix s, default now) is when the event was made, for the age the health check reads.
        """
        new = NewMessage(topic, payload, qos, retain, event_id, priority, created_at)
        return self.store([new])[0]

    def store(self, messages: Sequence[NewMessage], acked: Iterable[int] = ()) -> list[int]:
        """In one transaction: remove the rows `acked` names and add `messages` in order;
        returns their sequence numbers (as `add` would). All or nothing."""
        with self._lock, self._transaction():
            for seq in acked:
                self._delete(seq)
            return [self._insert(m) for m in messages]

    def _insert(self, new: NewMessage) -> int:
        priority = Priority(new.priority)
        row = self._db.execute(
            "SELECT seq FROM outbox WHERE event_id = ?", (new.event_id,)
        ).fetchone()
        if row is not None:
            self.counters.duplicates += 1
            return int(row[0])
        if self._depth >= self.max_events and not self._make_room(
            priority, new.topic, new.event_id
        ):
            return 0
        created = time.time() if new.created_at is None else new.created_at
        cursor = self._db.execute(
            "INSERT INTO outbox (topic, payload, qos, retain, event_id, priority, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (new.topic, new.payload, new.qos, int(new.retain), new.event_id, priority, created),
        )
        if new.opens_weld is not None:
            self._db.execute(
                "INSERT OR IGNORE INTO open_welds (weld_id, start, opened_at) VALUES (?, ?, ?)",
                (new.opens_weld, new.payload, created),
            )
        if new.closes_weld is not None:
            self._db.execute("DELETE FROM open_welds WHERE weld_id = ?", (new.closes_weld,))
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

    def note_progress(
        self, weld_id: str, n_windows: int, p_defect: float, window_p: float, elapsed_s: float
    ) -> None:
        """The open weld's verdict so far, after one more judged window. Committed without an
        fsync (WAL with synchronous=NORMAL): one write per window costs no disk flush, and
        survives the process dying; a power loss may lose the latest windows."""
        with self._lock:
            try:
                self._db.execute("PRAGMA synchronous=NORMAL")
                try:
                    with self._transaction():
                        self._db.execute(
                            "UPDATE open_welds SET n_windows = ?, p_defect = ?,"
                            " window_p_max = MAX(COALESCE(window_p_max, 0.0), ?), elapsed_s = ?"
                            " WHERE weld_id = ?",
                            (n_windows, p_defect, window_p, elapsed_s, weld_id),
                        )
                finally:
                    self._db.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot write outbox {self.path}: {exc}") from exc

    def forget_weld(self, weld_id: str) -> None:
        """Drop an open weld that can never get a result (its stored start is unusable)."""
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM open_welds WHERE weld_id = ?", (weld_id,))

    def open_welds(self) -> list[OpenWeldRecord]:
        """Welds with a stored start and no stored result, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT weld_id, start, n_windows, p_defect, window_p_max, elapsed_s"
                    " FROM open_welds ORDER BY opened_at, weld_id"
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read outbox {self.path}: {exc}") from exc
        return [OpenWeldRecord(r[0], bytes(r[1]), *r[2:]) for r in rows]

    def ack(self, seq: int) -> None:
        """Remove a message the broker has acknowledged (unknown seq: no-op)."""
        with self._lock, self._transaction():
            self._delete(seq)

    def _delete(self, seq: int) -> None:
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
        """BEGIN IMMEDIATE ... COMMIT; on any error (in the body or the COMMIT itself: a full
        or failing disk fails there) ROLLBACK, restore the depth and counters, and convert
        sqlite3 errors to OutboxError."""
        depth, counted = self._depth, self.counters.as_dict()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot write outbox {self.path}: {exc}") from exc
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            # Nothing of the transaction happened: the depth and counters are as before it.
            self._depth = depth
            for name, value in counted.items():
                setattr(self.counters, name, value)
            if isinstance(exc, sqlite3.Error):
                raise OutboxError(f"cannot write outbox {self.path}: {exc}") from exc
            raise
