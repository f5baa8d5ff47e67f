"""FrameRing and the AudioBlock helpers, with exact synthetic audio."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from monitor.audio.blocks import sanitize_nonfinite
from monitor.audio.ring_buffer import FrameRing

NO_WAIT_S = 0.0
SHORT_WAIT_S = 0.05


def ramp(start: int, frames: int, channels: int) -> np.ndarray:
    """Frames whose value encodes (frame index, channel): frame*10 + channel."""
    index = np.arange(start, start + frames, dtype=np.float32)[:, None]
    return index * 10 + np.arange(channels, dtype=np.float32)[None, :]


def test_read_returns_written_frames_in_order_across_the_wrap() -> None:
    ring = FrameRing(capacity_frames=10, channels=2)
    ring.write(ramp(0, 7, 2))
    first = ring.read(NO_WAIT_S)
    ring.write(ramp(7, 8, 2))  # storage positions 7..9 then 0..4
    second = ring.read(NO_WAIT_S)
    assert first is not None and second is not None
    np.testing.assert_array_equal(first.samples, ramp(0, 7, 2))
    np.testing.assert_array_equal(second.samples, ramp(7, 8, 2))
    assert (first.start_frame, second.start_frame) == (0, 7)


def test_read_hands_out_a_copy_the_ring_does_not_overwrite() -> None:
    ring = FrameRing(capacity_frames=4, channels=1)
    ring.write(ramp(0, 4, 1))
    got = ring.read(NO_WAIT_S)
    ring.write(ramp(4, 4, 1))  # reuses the same storage
    assert got is not None
    np.testing.assert_array_equal(got.samples, ramp(0, 4, 1))


def test_write_copies_so_the_caller_may_reuse_its_buffer() -> None:
    ring = FrameRing(capacity_frames=8, channels=1)
    buffer = ramp(0, 3, 1)
    ring.write(buffer)
    buffer[:] = -1
    got = ring.read(NO_WAIT_S)
    assert got is not None
    np.testing.assert_array_equal(got.samples, ramp(0, 3, 1))


def test_full_ring_drops_the_newest_frames_and_counts_them() -> None:
    ring = FrameRing(capacity_frames=5, channels=1)
    stored = ring.write(ramp(0, 8, 1))
    assert stored == 5
    assert ring.dropped_frames_total == 3
    got = ring.read(NO_WAIT_S)
    assert got is not None
    np.testing.assert_array_equal(got.samples, ramp(0, 5, 1))  # the oldest survive


def test_block_after_a_drop_carries_the_gap_and_keeps_the_frame_clock() -> None:
    ring = FrameRing(capacity_frames=5, channels=1)
    ring.write(ramp(0, 5, 1))
    ring.write(ramp(5, 4, 1))  # ring full: frames 5..8 are lost
    before = ring.read(NO_WAIT_S)
    ring.write(ramp(9, 3, 1))
    after = ring.read(NO_WAIT_S)
    assert before is not None and after is not None
    assert (before.start_frame, before.dropped_frames) == (0, 0)
    assert (after.start_frame, after.dropped_frames) == (9, 4)
    np.testing.assert_array_equal(after.samples, ramp(9, 3, 1))


def test_a_read_stops_at_a_gap_so_the_drop_is_reported_where_it_happened() -> None:
    ring = FrameRing(capacity_frames=6, channels=1)
    ring.write(ramp(0, 6, 1))
    first = ring.read(NO_WAIT_S, max_frames=2)  # frees 2 frames
    ring.write(ramp(6, 3, 1))  # ring full (drops nothing yet): stores 6, 7; drops 8
    ring.read(NO_WAIT_S, max_frames=1)  # frees a frame for the next write
    ring.write(ramp(9, 1, 1))  # stored after the gap
    rest = ring.read(NO_WAIT_S)
    after_gap = ring.read(NO_WAIT_S)
    assert first is not None and rest is not None and after_gap is not None
    np.testing.assert_array_equal(rest.samples, ramp(3, 5, 1))  # frames 3..7, no gap inside
    assert rest.dropped_frames == 0
    assert (after_gap.start_frame, after_gap.dropped_frames) == (9, 1)


def test_drops_while_full_accumulate_into_one_gap() -> None:
    ring = FrameRing(capacity_frames=3, channels=1)
    ring.write(ramp(0, 3, 1))
    for start in range(3, 9, 2):  # three writes while full: 6 frames lost
        ring.write(ramp(start, 2, 1))
    ring.read(NO_WAIT_S)
    ring.write(ramp(9, 1, 1))
    got = ring.read(NO_WAIT_S)
    assert got is not None
    assert (got.start_frame, got.dropped_frames, ring.dropped_frames_total) == (9, 6, 6)


def test_read_times_out_with_none_when_nothing_was_written() -> None:
    ring = FrameRing(capacity_frames=4, channels=1)
    assert ring.read(SHORT_WAIT_S) is None


def test_read_wakes_when_the_producer_writes() -> None:
    ring = FrameRing(capacity_frames=16, channels=1)
    timer = threading.Timer(SHORT_WAIT_S, ring.write, args=(ramp(0, 4, 1),))
    timer.start()
    got = ring.read(timeout_s=5.0)
    timer.join()
    assert got is not None
    np.testing.assert_array_equal(got.samples, ramp(0, 4, 1))


def test_a_reader_waiting_for_a_block_is_woken_once_it_is_whole() -> None:
    ring = FrameRing(capacity_frames=64, channels=1)
    woken: list[int] = []

    def produce() -> None:
        for start in range(0, 12, 4):  # three callbacks of 4 frames
            ring.write(ramp(start, start + 4, 1))
            woken.append(int(ring._data_ready.is_set()))

    timer = threading.Timer(SHORT_WAIT_S, produce)
    timer.start()
    got = ring.read(timeout_s=5.0, max_frames=8, wait_for=8)
    timer.join()
    assert got is not None
    np.testing.assert_array_equal(got.samples, ramp(0, 8, 1))
    assert woken[:2] == [0, 1]  # the first callback did not wake the reader, the second did


def test_a_read_waiting_for_more_than_arrives_gives_none_then_the_frames_there() -> None:
    ring = FrameRing(capacity_frames=64, channels=1)
    ring.write(ramp(0, 3, 1))
    assert ring.read(SHORT_WAIT_S, max_frames=8, wait_for=8) is None
    got = ring.read(NO_WAIT_S, max_frames=8)  # the caller's deadline: whatever is there
    assert got is not None
    np.testing.assert_array_equal(got.samples, ramp(0, 3, 1))


def test_a_full_ring_wakes_a_reader_waiting_for_more_than_it_holds() -> None:
    ring = FrameRing(capacity_frames=8, channels=1)
    timer = threading.Timer(SHORT_WAIT_S, ring.write, args=(ramp(0, 8, 1),))
    timer.start()
    got = ring.read(timeout_s=5.0, wait_for=100)
    timer.join()
    assert got is not None and len(got.samples) == 8


def test_wait_for_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="wait_for"):
        FrameRing(capacity_frames=8, channels=1).read(NO_WAIT_S, wait_for=0)


def test_max_frames_splits_reads_without_losing_frames() -> None:
    ring = FrameRing(capacity_frames=16, channels=1)
    ring.write(ramp(0, 10, 1))
    sizes = []
    while (got := ring.read(NO_WAIT_S, max_frames=4)) is not None:
        sizes.append((got.start_frame, len(got.samples)))
    assert sizes == [(0, 4), (4, 4), (8, 2)]


def test_concurrent_producer_and_consumer_see_every_frame_once_in_order() -> None:
    ring = FrameRing(capacity_frames=64, channels=2)
    total_frames, chunk = 20_000, 37
    received: list[np.ndarray] = []
    dropped = []

    def produce() -> None:
        for start in range(0, total_frames, chunk):
            frames = min(chunk, total_frames - start)
            while ring.available_frames + frames > ring.capacity_frames:
                threading.Event().wait(0.0001)  # a test producer may wait; the real one drops
            ring.write(ramp(start, frames, 2))

    producer = threading.Thread(target=produce)
    producer.start()
    got_frames = 0
    while got_frames < total_frames:
        got = ring.read(timeout_s=5.0, max_frames=50)
        assert got is not None, "consumer starved"
        assert got.start_frame == got_frames
        received.append(got.samples)
        dropped.append(got.dropped_frames)
        got_frames += len(got.samples)
    producer.join()
    np.testing.assert_array_equal(np.concatenate(received), ramp(0, total_frames, 2))
    assert sum(dropped) == 0


def test_frame_clock_counts_every_offered_frame_including_drops() -> None:
    ring = FrameRing(capacity_frames=4, channels=1)
    ring.write(ramp(0, 6, 1))
    assert (ring.frames_offered, ring.available_frames) == (6, 4)


def test_write_rejects_frames_with_the_wrong_channel_count() -> None:
    ring = FrameRing(capacity_frames=4, channels=2)
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        ring.write(np.zeros((3, 1), dtype=np.float32))


def test_for_duration_sizes_the_ring_in_seconds() -> None:
    ring = FrameRing.for_duration(seconds=0.5, sample_rate=48_000, channels=8)
    assert (ring.capacity_frames, ring.channels) == (24_000, 8)


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_for_duration_rejects_non_positive_or_nan_seconds(seconds: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        FrameRing.for_duration(seconds=seconds, sample_rate=16_000, channels=1)


def test_sanitize_replaces_nan_and_inf_by_zero_and_counts_them() -> None:
    samples = np.array([[0.5, np.nan], [np.inf, -np.inf], [0.25, -0.25]], dtype=np.float32)
    clean, count = sanitize_nonfinite(samples)
    assert count == 3
    np.testing.assert_array_equal(clean, [[0.5, 0.0], [0.0, 0.0], [0.25, -0.25]])
    assert clean.dtype == np.float32
    assert np.isnan(samples[0, 1])  # the input is left alone


def test_sanitize_returns_finite_input_unchanged_without_copying() -> None:
    samples = ramp(0, 5, 2)
    clean, count = sanitize_nonfinite(samples)
    assert (clean is samples, count) == (True, 0)
