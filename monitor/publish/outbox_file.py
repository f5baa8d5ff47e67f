"""The outbox file under the open outbox: noticing that it was deleted or replaced, and
carrying the rows over into a new file.

SQLite keeps writing into a database file that was unlinked while open: every later event
would be committed, fsynced and still gone at the next start, with the open-weld records a
killed daemon needs for its ``interrupted`` results. So the outbox compares the file at its
path (device and inode) with the one it opened before each write, and when they differ reads
every row it still holds through the old connection, closes it (the last connection
checkpoints and removes the ``-wal`` and ``-shm`` files beside the path, which belong to the
old file) and writes the rows, with their sequence numbers, into a new file at the path.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

FileIdentity = tuple[int, int]  # (st_dev, st_ino)

_OUTBOX_COLUMNS = "seq, topic, payload, qos, retain, event_id, priority, created_at"
_OPEN_WELD_COLUMNS = "weld_id, start, opened_at, n_windows, p_defect, window_p_max, elapsed_s"


def file_identity(path: Path) -> FileIdentity | None:
    """The file now at `path` (device, inode); None when there is none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class CarriedRows:
    """Every row an outbox held, read from its old file."""

    outbox: list[tuple[object, ...]]
    open_welds: list[tuple[object, ...]]
    last_seq: int  # the highest sequence number ever given out: never reused


def read_rows(db: sqlite3.Connection) -> CarriedRows:
    """Every stored event and open weld of the database `db` is connected to."""
    last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return CarriedRows(
        db.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY seq").fetchall(),
        db.execute(f"SELECT {_OPEN_WELD_COLUMNS} FROM open_welds").fetchall(),
        int(last[0]) if last else 0,
    )


def write_rows(db: sqlite3.Connection, rows: CarriedRows) -> None:
    """Insert `rows` (inside the caller's transaction), keeping their sequence numbers so
    acks the publisher still holds name the same events; rows already there are kept."""
    db.executemany(
        f"INSERT OR IGNORE INTO outbox ({_OUTBOX_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", rows.outbox
    )
    db.executemany(
        f"INSERT OR IGNORE INTO open_welds ({_OPEN_WELD_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
        rows.open_welds,
    )
    # A new event must not take the number of one acked in the old file: an ack still on
    # its way would delete it.
    db.execute(
        "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'outbox'", (rows.last_seq,)
    )
    db.execute(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox', ?"
        " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox')",
        (rows.last_seq,),
    )
