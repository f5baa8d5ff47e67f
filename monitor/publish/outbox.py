"""Durable outbox: every event that must reach the broker is on disk before it is published.

Ownership: the outbox stores the exact payload bytes (original ``event_id`` and timestamps), so
a replayed event after a crash or an outage is byte-identical to the first try. A row is
removed only by ``ack(seq)``, which the publisher calls after the broker's PUBACK. Delivery is
therefore at-least-once: a crash between PUBACK and ``ack`` re-sends one event, and consumers
deduplicate on ``event_id``.

Durability: SQLite in WAL mode with ``synchronous=FULL``; ``add`` returns only after the row is
committed and fsynced, so it survives SIGKILL and power loss.

Bound policy (``max_events``): only the events a consumer must not miss are stored (start,
alert, result, error; progress never reaches the outbox), and none is ever dropped. An add
that finds the box full grows it past the bound, logs an error and counts ``over_bound``. A
verdict is the product of the whole system and cannot be recomputed once the audio is gone,
while the rows are small (about 1 KB; 10,000 results are about 10 MB), so a full disk is a
far smaller risk than a silently lost result. The error log, the ``over_bound`` metric and
the ``depth`` gauge tell the operator the broker has been unreachable for long.

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
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from deploy.errors import WeldmonError
from monitor.publish.outbox_file import CarriedRows, file_identity, read_rows, write_rows

SCHEMA_USER_VERSION = 2  # PRAGMA user_version of the table layout below (2: open_welds)
LEGACY_PRIORITY = 1  # the priority column's value in every row (the column is unused)
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
    priority   INTEGER NOT NULL,                   -- unused, kept so old files still open
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


@dataclass(frozen=True)
class NewMessage:
    """A message to store (`Outbox.store`)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    event_id: str
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
    created_at: float


@dataclass
class OutboxCounters:
    """Monotonic counters for metrics (read them, never reset them)."""

    added: int = 0
    acked: int = 0
    duplicates: int = 0  # add() of an event_id already stored: kept once
    over_bound: int = 0  # adds that grew the box past max_events (nothing is dropped)
    reopened: int = 0  # times the file was found deleted or replaced and made anew

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
            self._db = self._connect()
        except (sqlite3.Error, OSError) as exc:
            raise OutboxOpenError(
                f"cannot open outbox {self.path}: {exc} (if it is corrupt, move it aside; "
                "the events in it are then not published)"
            ) from exc
        self._identity = file_identity(self.path)
        self._carried: CarriedRows | None = None  # read from a lost file, not yet rewritten
        self.last_reopen: str | None = None  # what the latest reopen did, for the operator

    def _connect(self) -> sqlite3.Connection:
        """Open (or create) the database at `path` in WAL mode with the schema; sets the
        depth."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per call.
        db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OutboxError(f"{self.path}: cannot enable WAL (journal_mode is {mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            # Written only when it differs: a write needs the lock, and another process may
            # hold it while we start (reads still work in WAL mode).
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_USER_VERSION:
                db.execute(f"PRAGMA user_version={SCHEMA_USER_VERSION}")
            self._depth = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except BaseException:
            with contextlib.suppress(Exception):
                db.close()
            raise
        return db

    def _follow_file(self) -> None:
        """Before a write (lock held): if the file at `path` is not the one open (deleted,
        or replaced), carry every row over into a new file there (`outbox_file`); raises
        OutboxError when that fails (the caller keeps the event in memory and retries)."""
        try:
            if self._carried is None and file_identity(self.path) == self._identity:
                return
        except OSError as exc:  # not "no such file": the folder cannot be read
            raise OutboxError(f"cannot check outbox {self.path}: {exc}") from exc
        try:
            if self._carried is None:
                self._carried = read_rows(self._db)
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()  # removes the old file's -wal and -shm beside the path
            self._db = self._connect()
            with self._transaction():
                write_rows(self._db, self._carried)
            self._depth = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"outbox {self.path} was deleted or replaced: {exc}") from exc
        carried, self._carried = self._carried, None
        self._identity = file_identity(self.path)
        self.counters.reopened += 1
        self.last_reopen = (
            f"outbox file {self.path} was deleted or replaced while open; opened a new one and "
            f"wrote the {len(carried.outbox)} waiting events and {len(carried.open_welds)} "
            "open welds back into it"
        )
        log.error(
            "outbox_reopened",
            path=str(self.path),
            events=len(carried.outbox),
            open_welds=len(carried.open_welds),
        )

    def check_file(self) -> None:
        """Follow a deleted or replaced file now, not only at the next write (the daemon
        calls this every second, so rows stored before an idle spell are not left in an
        unlinked file); OutboxError when that fails."""
        with self._lock:
            self._follow_file()

    # -- writing ---------------------------------------------------------------------------

    def add(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        event_id: str,
        created_at: float | None = None,
    ) -> int:
        """Store one message durably and return its sequence number (the existing one if
        ``event_id`` is already stored). `created_at` (unix s, default now) is when the event
        was made, for the age the health check reads."""
        new = NewMessage(topic, payload, qos, retain, event_id, created_at)
        return self.store([new])[0]

    def store(self, messages: Sequence[NewMessage], acked: Iterable[int] = ()) -> list[int]:
        """In one transaction: remove the rows `acked` names and add `messages` in order;
        returns their sequence numbers (as `add` would). All or nothing."""
        with self._lock:
            self._follow_file()
            with self._transaction():
                for seq in acked:
                    self._delete(seq)
                return [self._insert(m) for m in messages]

    def _insert(self, new: NewMessage) -> int:
        row = self._db.execute(
            "SELECT seq FROM outbox WHERE event_id = ?", (new.event_id,)
        ).fetchone()
        if row is not None:
            self.counters.duplicates += 1
            return int(row[0])
        if self._depth >= self.max_events:
            self._over_bound(new.topic, new.event_id)
        created = time.time() if new.created_at is None else new.created_at
        cursor = self._db.execute(
            "INSERT INTO outbox (topic, payload, qos, retain, event_id, priority, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                new.topic,
                new.payload,
                new.qos,
                int(new.retain),
                new.event_id,
                LEGACY_PRIORITY,
                created,
            ),
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

    def _over_bound(self, topic: str, event_id: str) -> None:
        self.counters.over_bound += 1
        log.error(
            "outbox.over_bound",
            topic=topic,
            event_id=event_id,
            depth=self._depth + 1,
            max_events=self.max_events,
            note="events are never dropped; the broker has been unreachable for long",
        )

    def note_progress(
        self, weld_id: str, n_windows: int, p_defect: float, window_p: float, elapsed_s: float
    ) -> None:
        """The open weld's verdict so far, after one more judged window. Committed without an
        fsync (WAL with synchronous=NORMAL): one write per window costs no disk flush, and
        survives the process dying; a power loss may lose the latest windows."""
        with self._lock:
            self._follow_file()
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

    def check_writable(self) -> None:
        """Write to the file and commit with an fsync; OutboxError if the disk refuses. An
        empty transaction commits even on a read-only disk, so only a real write (the schema
        version, unchanged) proves the outbox writable again."""
        with self._lock:
            self._follow_file()
            with self._transaction():
                self._db.execute(f"PRAGMA user_version={SCHEMA_USER_VERSION}")

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
        with self._lock:
            self._follow_file()
            with self._transaction():
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
                    "SELECT seq, topic, payload, qos, retain, event_id, created_at"
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
                created_at=r[6],
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
