"""The publisher's queue of QoS 1 events: the durable outbox, and in memory what it could not
take. The one facade over both: the publisher, its link, the metrics, /healthz and the
interrupted-weld report read and write the outbox only through a `Spool`.

Normal case: `put` writes the event into the outbox (committed and fsynced before it
returns) and the publisher drains rows in order, acking each after the broker's PUBACK.

When the outbox cannot be written (another process holds its lock; a full, read-only or
failing disk), the spool is *degraded*:

- the event is kept in memory, after every stored row, and so is every later event (they
  never touch the disk while degraded, so the order holds and the event loop is not blocked
  again by each write);
- held events are published from memory like rows, so subscribers get every verdict while
  the disk fails; acks of published rows are remembered;
- a retry task writes the held events and the remembered acks into the outbox in one
  transaction, off the event loop, waiting between attempts with the one back-off helper
  (`monitor.backoff`); a held event delivered meanwhile needs no write at all;
- ``on_state(True, message)`` is called once when it begins (the daemon logs it, publishes an
  ``error`` event and /healthz says why) and ``on_state(False, message)`` once the outbox has
  everything again.

So nothing is lost once the disk recovers. What is not durable: while degraded the held
events live only in this process, so a SIGKILL loses them; `close` makes one last attempt
and logs every event it still could not save (``outbox_lost_on_exit``, payload included), so
the journal keeps it.

Without an outbox (``outbox=None``: replay's ``--publish``) every event is held in memory
and published from there; nothing is degraded and nothing survives the process.

Thread: the event loop, except the retry's write, which runs in a worker thread on a
snapshot (the outbox has its own lock).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from monitor.backoff import backoff_delay
from monitor.events import WeldProgress
from monitor.publish.outbox import NewMessage, OpenWeldRecord, Outbox, OutboxError

RETRY_MIN_S = 0.5  # first wait before writing held events again
# Cap of the retry back-off: a recovered disk is noticed within this many seconds. Each
# attempt costs at most the outbox's busy timeout, on a worker thread.
RETRY_MAX_S = 10.0
CLOSE_ATTEMPT_TIMEOUT_S = 2.0  # close(): the last write attempt may take this long

log = structlog.get_logger(__name__)

StateHook = Callable[[bool, str], None]


@dataclass(eq=False)
class HeldEvent:
    """An event the outbox has not taken (yet); published from memory meanwhile."""

    message: NewMessage
    created_at: float = field(default_factory=time.time)
    seq: int | None = None  # set once a retry stored it as a row
    delivered: bool = False  # the broker acknowledged it


@dataclass(frozen=True, eq=False)
class SpoolItem:
    """One event to publish, in order: a stored row (`seq`) or a held event (`held`)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: float
    seq: int | None = None
    held: HeldEvent | None = None


@dataclass
class SpoolCounters:
    """Monotonic counters (metrics) of the in-memory side."""

    write_failures: int = 0  # outbox writes (add, ack or retry) that failed
    held: int = 0  # events that had to be kept in memory
    delivered_from_memory: int = 0  # held events published before the outbox took them
    recoveries: int = 0  # times the outbox took everything back


class Spool:
    """The ordered store the publisher drains (see the module docstring).

    Args:
        outbox: the durable outbox, or None to keep everything in memory (replay).
        on_state: called with (degraded, message) when the outbox starts or stops failing.
        on_stored: called after a retry stored held events (wakes the drain: rows it could
            not read before may be readable now).
        rng: jitter of the retry back-off.
    """

    def __init__(
        self,
        outbox: Outbox | None,
        *,
        on_state: StateHook | None = None,
        on_stored: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.counters = SpoolCounters()
        self.last_error: str | None = None
        self.degraded_since: float | None = None  # unix s of the first failure of this episode
        self._on_state = on_state
        self._on_stored = on_stored
        self._rng = rng or random.Random()
        self._held: collections.deque[HeldEvent] = collections.deque()
        self._acks: set[int] = set()  # rows delivered whose delete has not been written yet
        self._retry_wanted: asyncio.Event | None = None
        self._retrying = False
        self._reopens_seen = 0  # outbox.counters.reopened already reported

    # -- state --------------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """True while the outbox cannot be written (events are held in memory)."""
        return self.degraded_since is not None

    @property
    def held(self) -> int:
        """Events held in memory, not yet delivered nor stored."""
        return sum(1 for h in self._held if h.seq is None)

    @property
    def depth(self) -> int:
        """Events waiting for a PUBACK: stored rows (less the delivered ones) and held ones."""
        rows = self.outbox.depth - len(self._acks) if self.outbox is not None else 0
        return max(0, rows) + self.held

    def oldest_created_at(self) -> float | None:
        """Unix time the oldest waiting event was made; None when none waits. Reads one
        indexed row (callable from another thread: the outbox takes its lock)."""
        if self.outbox is not None and self.outbox.depth > len(self._acks):
            try:
                rows = self.outbox.pending(1 + len(self._acks))
            except OutboxError:
                rows = []
            for row in rows:
                if row.seq not in self._acks:
                    return row.created_at
        for _ in range(3):  # the loop may change the deque while this thread copies it
            try:
                waiting = [h.created_at for h in tuple(self._held) if h.seq is None]
            except RuntimeError:
                continue
            return waiting[0] if waiting else None
        return None

    @property
    def over_bound(self) -> int:
        """Events stored past the outbox's bound, all time (0 without an outbox)."""
        return self.outbox.counters.over_bound if self.outbox is not None else 0

    @property
    def reopened(self) -> int:
        """Times the outbox made its file anew (0 without an outbox)."""
        return self.outbox.counters.reopened if self.outbox is not None else 0

    def open_welds(self) -> list[OpenWeldRecord]:
        """Welds with a stored start and no result (none without an outbox); OutboxError
        when the outbox cannot be read."""
        return self.outbox.open_welds() if self.outbox is not None else []

    def forget_weld(self, weld_id: str) -> None:
        """Drop an open weld that can never get a result; OutboxError when it fails."""
        if self.outbox is not None:
            self.outbox.forget_weld(weld_id)

    # -- the event loop's calls -----------------------------------------------------------------

    def put(self, message: NewMessage) -> None:
        """Store `message` durably, or hold it in memory when the outbox fails (never raises)."""
        if self.outbox is None:
            self._held.append(HeldEvent(message))
            return
        if not self.degraded:
            try:
                self.outbox.store([message])
                return
            except OutboxError as exc:
                self._failed(exc)
            finally:
                self._report_reopen()
        self._held.append(HeldEvent(message))
        self.counters.held += 1

    def check_outbox_file(self) -> None:
        """Follow a deleted or replaced outbox file now rather than at the next write (the
        daemon calls this every second; a stat, no write)."""
        if self.outbox is None or self.degraded:
            return
        try:
            self.outbox.check_file()
        except OutboxError as exc:
            self._failed(exc)
        self._report_reopen()

    def _report_reopen(self) -> None:
        """Say it when the outbox had to make its file anew: degraded (the error event)
        and at once writable again, every waiting event being in the new file."""
        if self.outbox is None or self.outbox.counters.reopened == self._reopens_seen:
            return
        self._reopens_seen = self.outbox.counters.reopened
        if self._on_state is not None:
            self._on_state(True, self.outbox.last_reopen or "outbox file was replaced")
            self._on_state(False, "outbox file made anew; every waiting event is in it")

    def note_progress(self, progress: WeldProgress) -> None:
        """Record an open weld's verdict so far in the outbox (best effort: skipped while
        degraded; a failure degrades like any write)."""
        if self.outbox is None or self.degraded:
            return
        try:
            self.outbox.note_progress(
                progress.weld_id,
                progress.n_windows,
                progress.p_defect,
                progress.window_p_defect,
                progress.elapsed_s,
            )
        except OutboxError as exc:
            self._failed(exc)
        self._report_reopen()

    def pending(self, limit: int) -> list[SpoolItem]:
        """Up to `limit` events to publish, oldest first: rows, then held events."""
        items: list[SpoolItem] = []
        if self.outbox is not None:
            try:
                rows = self.outbox.pending(limit + len(self._acks))
            except OutboxError as exc:
                self._failed(exc)  # reading failed too: only what memory holds goes out
                rows = []
            items += [
                SpoolItem(r.topic, r.payload, r.qos, r.retain, r.created_at, seq=r.seq)
                for r in rows
                if r.seq not in self._acks
            ][:limit]
        for h in list(self._held):
            if len(items) >= limit:
                break
            if h.seq is None:
                m = h.message
                items.append(SpoolItem(m.topic, m.payload, m.qos, m.retain, h.created_at, held=h))
        return items

    def delivered(self, item: SpoolItem) -> None:
        """The broker acknowledged `item`: remove it (the row's delete may be held too)."""
        held = item.held
        if held is not None:
            held.delivered = True
        if held is not None and held.seq is None:
            self._discard(held)
            self.counters.delivered_from_memory += 1
            return
        seq = held.seq if held is not None else item.seq
        if held is not None:
            self._discard(held)
        if seq is None or self.outbox is None:
            return
        if not self.degraded:
            try:
                self.outbox.ack(seq)
                return
            except OutboxError as exc:
                self._failed(exc)
            finally:
                self._report_reopen()
        self._acks.add(seq)

    def _discard(self, held: HeldEvent) -> None:
        with contextlib.suppress(ValueError):  # a retry already moved it into the outbox
            self._held.remove(held)

    # -- failure and recovery ---------------------------------------------------------------

    def _failed(self, exc: OutboxError) -> None:
        self.counters.write_failures += 1
        self.last_error = str(exc)
        if self.degraded:
            return
        self.degraded_since = time.time()
        path = self.outbox.path if self.outbox is not None else None
        message = (
            f"outbox {path} cannot be written ({exc}); events are kept in memory, published "
            "from there and written to the outbox once it works again"
        )
        log.error("outbox_degraded", path=str(path), error=str(exc))
        if self._retry_wanted is not None:
            self._retry_wanted.set()
        if self._on_state is not None:
            self._on_state(True, message)

    async def keep_retrying(self) -> None:
        """While degraded, write held events and acks into the outbox with capped back-off;
        runs until cancelled (the publisher owns the task)."""
        self._retry_wanted = wanted = asyncio.Event()
        if self.degraded:
            wanted.set()
        failures = 0
        while True:
            await wanted.wait()
            await asyncio.sleep(backoff_delay(failures, RETRY_MIN_S, RETRY_MAX_S, self._rng))
            if await self._write_back():
                failures = 0
                if not self._held and not self._acks:
                    wanted.clear()
                    self._recovered()
            else:
                failures += 1

    async def _write_back(self, timeout_s: float | None = None) -> bool:
        """One attempt to store every held event and held ack; True when it worked."""
        if self.outbox is None or self._retrying:
            return False
        snapshot = [h for h in self._held if h.seq is None]
        acks = set(self._acks)
        outbox = self.outbox
        self._retrying = True
        try:
            write = asyncio.to_thread(
                _store_or_probe, outbox, [_with_time(h) for h in snapshot], sorted(acks)
            )
            seqs = await (write if timeout_s is None else asyncio.wait_for(write, timeout_s))
        except (OutboxError, TimeoutError) as exc:
            self.counters.write_failures += 1
            self.last_error = str(exc) or "timed out"
            return False
        finally:
            self._retrying = False
        self._report_reopen()
        self._acks -= acks
        for held, seq in zip(snapshot, seqs, strict=True):
            held.seq = seq
            self._discard(held)  # a row now; delivered() of a stale item acks the row
            if held.delivered and seq:
                self._acks.add(seq)  # published from memory while it was being written
        if self._on_stored is not None:
            self._on_stored()
        return True

    def _recovered(self) -> None:
        since = self.degraded_since
        self.degraded_since = None
        self.last_error = None
        self.counters.recoveries += 1
        after = time.time() - since if since is not None else 0.0
        message = f"outbox writable again after {after:.1f} s; every held event is stored"
        log.info("outbox_recovered", after_s=round(after, 1), depth=self.depth)
        if self._on_state is not None:
            self._on_state(False, message)

    async def close(self) -> None:
        """Last chance for held events: one write attempt, then log each one still unsaved."""
        pending = self.outbox is not None and (self._held or self._acks)
        if pending and await self._write_back(CLOSE_ATTEMPT_TIMEOUT_S) and not self._held:
            self._recovered()
        for held in self._held:
            if held.seq is not None:
                continue
            m = held.message
            log.error(
                "outbox_lost_on_exit",
                topic=m.topic,
                event_id=m.event_id,
                payload=m.payload.decode(errors="replace"),
                why=self.last_error or "no outbox (published from memory only)",
            )


def _store_or_probe(outbox: Outbox, messages: list[NewMessage], acks: list[int]) -> list[int]:
    """Store `messages` and `acks`; with nothing to store, prove the outbox writable: held
    events delivered from memory leave nothing to write, and an empty commit succeeds on a
    read-only disk, which counted as recovered and degraded again at the next event."""
    if not messages and not acks:
        outbox.check_writable()
        return []
    return outbox.store(messages, acks)


def _with_time(held: HeldEvent) -> NewMessage:
    return dataclasses.replace(held.message, created_at=held.created_at)
