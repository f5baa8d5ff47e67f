"""A single-producer / single-consumer ring of float32 audio frames, sized in seconds.

The producer is the PortAudio callback thread; the consumer is the thread that turns audio into
blocks for the monitor. See `FrameRing` for the ownership and overload rules.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

RING_DTYPE = np.float32  # what PortAudio delivers with dtype="float32" and the model consumes


@dataclass(frozen=True, slots=True)
class RingRead:
    """Frames taken out of the ring, with their place on the producer's frame counter."""

    samples: np.ndarray  # float32 [frames, channels]; a fresh copy the reader owns
    start_frame: int  # producer frame index of samples[0] (counts dropped frames too)
    dropped_frames: int  # frames the ring dropped immediately before samples[0]


class FrameRing:
    """Fixed-size SPSC ring of float32 ``[frames, channels]`` audio.

    Threads and ownership:
      * Exactly one producer thread calls `write` (the PortAudio callback). `write` copies the
        caller's buffer into preallocated storage (at most two slice copies), never waits,
        never logs and allocates nothing beyond a tuple when a gap must be recorded. The caller
        keeps ownership of the array it passed.
      * Exactly one consumer thread calls `read`, which waits up to a timeout for frames and
        returns a fresh copy the reader owns.
      * The producer alone advances the write counter and the consumer alone advances the read
        counter; each publishes its counter after copying, so neither ever sees a half-written
        frame. Integer assignment is atomic under CPython's GIL, which this relies on.

    Overload policy: when the ring is full the *newest* frames (those being written) are
    dropped, not the oldest. Dropping the oldest would make the producer move the consumer's
    read position, which needs a lock shared with the real-time callback; dropping the newest
    keeps the two sides independent. Either way the consumer's view of the stream has a gap and
    its latency is capped at the ring's length, so nothing is gained by the lock. Every dropped
    frame is counted: the total in `dropped_frames_total`, and per gap on the first `RingRead`
    after the gap (``dropped_frames``), whose ``start_frame`` skips the lost frames so the
    frame counter stays the stream's true sample clock.
    """

    def __init__(self, capacity_frames: int, channels: int) -> None:
        if capacity_frames < 1:
            raise ValueError(f"capacity_frames must be >= 1, got {capacity_frames}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self._storage = np.zeros((capacity_frames, channels), dtype=RING_DTYPE)
        self._capacity = capacity_frames
        self._channels = channels
        self._stored = 0  # frames ever stored (producer-owned)
        self._consumed = 0  # frames ever read out (consumer-owned)
        self._offered = 0  # frames ever passed to write, stored or dropped (producer-owned)
        self._dropped_total = 0  # producer-owned
        self._pending_drop = 0  # dropped since the last stored frame (producer-owned)
        # (stored index of the first frame after a gap, frames lost in that gap); appended by
        # the producer, popped by the consumer (deque append/popleft are thread-safe). Each
        # entry points at a frame still in the ring, so there are never more than
        # capacity_frames entries.
        self._gaps: deque[tuple[int, int]] = deque()
        self._dropped_before_read = 0  # consumer-owned: frames lost before the read position
        self._data_ready = threading.Event()
        # Frames the waiting reader wants before it is woken (consumer-owned, producer-read):
        # waking a thread costs more than the copy, so a reader that wants a whole block is
        # woken once per block, not once per callback (issue 21, docs/benchmarks.md).
        self._wake_frames = 1

    @classmethod
    def for_duration(cls, seconds: float, sample_rate: int, channels: int) -> FrameRing:
        """A ring holding `seconds` of audio at `sample_rate` Hz (at least one frame)."""
        if not seconds > 0:
            raise ValueError(f"ring duration must be > 0 s, got {seconds}")
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be >= 1 Hz, got {sample_rate}")
        return cls(max(1, round(seconds * sample_rate)), channels)

    @property
    def capacity_frames(self) -> int:
        """How many frames fit before writes start dropping."""
        return self._capacity

    @property
    def channels(self) -> int:
        """Channels per frame."""
        return self._channels

    @property
    def available_frames(self) -> int:
        """Frames written and not yet read (a snapshot; the producer may add more)."""
        return self._stored - self._consumed

    @property
    def frames_offered(self) -> int:
        """Frames ever passed to `write` (stored plus dropped): the producer's sample clock."""
        return self._offered

    @property
    def dropped_frames_total(self) -> int:
        """Frames ever dropped because the ring was full."""
        return self._dropped_total

    def write(self, frames: np.ndarray) -> int:
        """Copy `frames` (``[n, channels]``) in; return how many were stored (rest dropped).

        Producer thread only. Never blocks.
        """
        n = frames.shape[0]
        if frames.ndim != 2 or frames.shape[1] != self._channels:
            raise ValueError(
                f"expected frames shaped [n, {self._channels}], got {list(frames.shape)}"
            )
        free = self._capacity - (self._stored - self._consumed)
        kept = min(n, free)
        if kept > 0:
            if self._pending_drop:
                self._gaps.append((self._stored, self._pending_drop))
                self._pending_drop = 0
            start = self._stored % self._capacity
            first = min(kept, self._capacity - start)
            self._storage[start : start + first] = frames[:first]
            if kept > first:
                self._storage[: kept - first] = frames[first:kept]
            self._stored += kept  # publish only after the copy: the reader never sees it early
        lost = n - kept
        if lost:
            self._pending_drop += lost
            self._dropped_total += lost
        self._offered += n
        if (
            kept > 0
            and self._stored - self._consumed >= self._wake_frames
            and not self._data_ready.is_set()
        ):
            self._data_ready.set()
        return kept

    def read(
        self, timeout_s: float, max_frames: int | None = None, wait_for: int = 1
    ) -> RingRead | None:
        """Wait up to `timeout_s` until `wait_for` frames are there; return the frames there
        (at most `max_frames`), or None when fewer than `wait_for` arrived in time.

        Consumer thread only. A read never spans a gap: frames after a drop start a new read
        that carries the gap's size in ``dropped_frames``.
        """
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if wait_for < 1:
            raise ValueError(f"wait_for must be >= 1, got {wait_for}")
        # A full ring wakes the reader whatever it asked for: waiting for more would drop audio.
        self._wake_frames = min(wait_for, self._capacity)
        # Clear before looking: a write that lands after the look sets the event again, so the
        # wait below cannot miss it.
        self._data_ready.clear()
        if self._stored - self._consumed < self._wake_frames and not self._data_ready.wait(
            timeout_s
        ):
            return None
        return self._take(max_frames)

    def _take(self, max_frames: int | None) -> RingRead | None:
        stored = self._stored  # one snapshot: the producer may move on meanwhile
        count = stored - self._consumed
        if count <= 0:
            return None
        dropped = 0
        if self._gaps and self._gaps[0][0] == self._consumed:
            dropped = self._gaps.popleft()[1]
            self._dropped_before_read += dropped
        if self._gaps:  # stop just before the next gap so its drop is reported on time
            count = min(count, self._gaps[0][0] - self._consumed)
        if max_frames is not None:
            count = min(count, max_frames)
        start = self._consumed % self._capacity
        first = min(count, self._capacity - start)
        out = np.empty((count, self._channels), dtype=RING_DTYPE)
        out[:first] = self._storage[start : start + first]
        if count > first:
            out[first:] = self._storage[: count - first]
        start_frame = self._consumed + self._dropped_before_read
        self._consumed += count  # publish after the copy: only now may the producer reuse it
        return RingRead(samples=out, start_frame=start_frame, dropped_frames=dropped)
