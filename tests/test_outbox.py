"""The durable outbox: order, ack, the bound policy, and surviving SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.publish.outbox import NewMessage, Outbox, OutboxError

REPO_ROOT = Path(__file__).resolve().parents[1]


def add(outbox: Outbox, n: int, topic: str = "t") -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for i, event_id in enumerate(ids):
        outbox.add(topic, f"payload-{event_id}-{i}".encode(), 1, False, event_id)
    return ids


def stored_ids(outbox: Outbox) -> list[str]:
    return [item.event_id for item in outbox.pending(10_000)]


def test_pending_returns_messages_in_insertion_order_with_exact_payloads(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_events=100) as outbox:
        outbox.add("a/b", b"\x00\xffbinary", 1, True, "e1")
        outbox.add("c", b"{}", 0, False, "e2")
        first, second = outbox.pending(10)
    assert (first.topic, first.payload, first.qos, first.retain, first.event_id) == (
        "a/b",
        b"\x00\xffbinary",
        1,
        True,
        "e1",
    )
    assert (second.qos, second.seq > first.seq) == (0, True)


def test_pending_honours_the_limit_from_the_oldest(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_events=100) as outbox:
        ids = add(outbox, 10)
        assert [i.event_id for i in outbox.pending(3)] == ids[:3]


def test_ack_removes_only_that_message_and_counts_it(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_events=100) as outbox:
        ids = add(outbox, 3)
        outbox.ack(outbox.pending(3)[1].seq)
        assert stored_ids(outbox) == [ids[0], ids[2]]
        assert (outbox.depth, outbox.counters.acked) == (2, 1)


def test_ack_of_an_unknown_seq_changes_nothing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_events=100) as outbox:
        add(outbox, 2)
        outbox.ack(999_999)
        assert (outbox.depth, outbox.counters.acked) == (2, 0)


def test_sequence_numbers_are_not_reused_after_acks(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_events=100) as outbox:
        add(outbox, 2)
        last = outbox.pending(2)[-1].seq
        for item in outbox.pending(2):
            outbox.ack(item.seq)
        add(outbox, 1)
        assert outbox.pending(1)[0].seq > last


def test_adding_the_same_event_id_twice_stores_it_once(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_events=100) as outbox:
        first = outbox.add("t", b"x", 1, False, "same")
        second = outbox.add("t", b"x", 1, False, "same")
        assert (first, outbox.depth, outbox.counters.duplicates) == (second, 1, 1)


def test_messages_survive_close_and_reopen(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_events=100) as outbox:
        ids = add(outbox, 5)
    with Outbox(tmp_path / "o.db", max_events=100) as reopened:
        assert (stored_ids(reopened), reopened.depth) == (ids, 5)


def test_full_box_of_results_grows_past_the_bound_with_an_error_each_time(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_events=2) as outbox:
        with capture_logs() as logs:
            ids = add(outbox, 4)
        assert stored_ids(outbox) == ids  # nothing dropped
        assert (outbox.depth, outbox.counters.over_bound) == (4, 2)
        errors = [e for e in logs if e["log_level"] == "error"]
        assert [e["event"] for e in errors] == ["outbox.over_bound"] * 2


def test_counters_are_exposed_as_a_dict_for_metrics(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_events=10) as outbox:
        add(outbox, 2)
        outbox.ack(outbox.pending(1)[0].seq)
        assert outbox.counters.as_dict() == {
            "added": 2,
            "acked": 1,
            "duplicates": 0,
            "over_bound": 0,
            "reopened": 0,
        }


def test_a_deleted_file_is_made_anew_with_every_waiting_row_and_open_weld(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, max_events=10) as outbox:
        first = NewMessage("t/start", b"s", 1, False, "e1", opens_weld="w1")
        outbox.store([first, NewMessage("t/result", b"r", 1, False, "e2")])
        acked = outbox.store([NewMessage("t/x", b"x", 1, False, "e3")])[0]
        outbox.ack(acked)
        for f in tmp_path.glob("o.db*"):
            f.unlink()  # what an operator's rm does under the running daemon
        [new_seq] = outbox.store([NewMessage("t/later", b"l", 1, False, "e4")])
        assert outbox.counters.reopened == 1
        assert outbox.depth == 3
    with Outbox(path, max_events=10) as reopened:  # the next process reads the new file
        assert [(r.seq, r.event_id) for r in reopened.pending(10)] == [
            (1, "e1"),
            (2, "e2"),
            (new_seq, "e4"),
        ]
        assert new_seq > acked, "a number once given out is never reused"
        assert [w.weld_id for w in reopened.open_welds()] == ["w1"]


def test_a_non_positive_bound_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="max_events"):
        Outbox(tmp_path / "o.db", max_events=0)


def test_a_file_that_is_not_a_database_raises_outbox_error(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match=r"o\.db"):
        Outbox(path, max_events=10)


_WRITER = """
import os, sys
from pathlib import Path
from monitor.publish.outbox import Outbox

outbox = Outbox(Path(sys.argv[1]), max_events=100_000)
for i in range(int(sys.argv[2])):
    outbox.add("weldmon/s/weld/result", b"%d" % i, 1, False, f"event-{i}")
    print(i, flush=True)  # reported only after add() returned: the row is committed
# Keep adding until killed, so the kill lands in the middle of a write.
i = int(sys.argv[2])
while True:
    outbox.add("weldmon/s/weld/result", b"%d" % i, 1, False, f"event-{i}")
    i += 1
"""


def test_every_added_event_survives_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    reported = 200
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(reported)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    acknowledged = [int(process.stdout.readline()) for _ in range(reported)]
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    with Outbox(path, max_events=100_000) as reopened:
        items = reopened.pending(1_000_000)
    stored = [item.event_id for item in items]
    # Every add() that returned is on disk, in order; the one in flight may or may not be.
    assert stored[:reported] == [f"event-{i}" for i in acknowledged]
    assert stored == [f"event-{i}" for i in range(len(stored))]
    assert all(item.payload == str(i).encode() for i, item in enumerate(items))
