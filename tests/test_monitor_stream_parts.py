"""Streaming parts of the pipeline: resampler, stations, history/windower, trigger and file
segmenters. Synthetic signals: exact and fast."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch

from deploy.windows import cut_windows
from monitor.pipeline.resample import ResampleError, StationResampler
from monitor.pipeline.stations import StationLayoutError, StationSplitter
from monitor.pipeline.windower import HistoryError, SampleHistory, WeldWindower
from monitor.segment.triggers import (
    MAX_PENDING_TRIGGERS,
    FileSegmenter,
    TriggerIgnored,
    TriggerSegmenter,
)

torch.set_num_threads(1)
RNG = np.random.default_rng(5)


def _blocks(x: np.ndarray, sizes: list[int]):
    start = 0
    i = 0
    while start < x.shape[0]:
        n = sizes[i % len(sizes)]
        yield x[start : start + n], start
        start += n
        i += 1


def test_stream_resampler_equals_whole_buffer_soxr_whatever_the_blocks() -> None:
    x = RNG.standard_normal(48_000 * 2).astype(np.float32) * 0.1
    r = StationResampler(48_000, 16_000)
    chunks = [r.process(b, s, epoch=1) for b, s in _blocks(x, [4800, 1234, 977])]
    chunks.append(r.flush())
    starts = [c.start_index for c in chunks]
    out = np.concatenate([c.samples for c in chunks])
    ref = soxr.resample(x, 48_000, 16_000, quality="HQ")
    np.testing.assert_array_equal(out, ref)
    # Every chunk starts where the previous one ended: the clock is the output count.
    assert starts == list(np.cumsum([0] + [c.samples.size for c in chunks[:-1]]))


def test_multichannel_resampler_gives_each_channel_its_mono_streams_samples() -> None:
    x = RNG.standard_normal((48_000, 3)).astype(np.float32) * 0.1
    multi = StationResampler(48_000, 16_000, channels=3)
    chunks = [multi.process(b, s, epoch=1) for b, s in _blocks(x, [4800, 1234, 977])]
    chunks.append(multi.flush())
    out = np.concatenate([c.samples for c in chunks])
    for c in range(3):
        mono = StationResampler(48_000, 16_000)
        parts = [mono.process(b[:, c], s, epoch=1) for b, s in _blocks(x, [4800, 1234, 977])]
        parts.append(mono.flush())
        np.testing.assert_array_equal(out[:, c], np.concatenate([p.samples for p in parts]))
    assert [c.start_index for c in chunks] == list(
        np.cumsum([0] + [c.samples.shape[0] for c in chunks[:-1]])
    )


def test_resampler_restarts_its_clock_on_a_new_epoch() -> None:
    r = StationResampler(16_000, 16_000)
    r.process(np.ones(1000, np.float32), 0, epoch=1)
    chunk = r.process(np.ones(10, np.float32), 0, epoch=2)
    assert chunk.start_index == 0


def test_resampler_fills_lost_frames_with_silence_to_keep_the_clock() -> None:
    r = StationResampler(16_000, 16_000)
    r.process(np.ones(100, np.float32), 0, epoch=1)
    chunk = r.process(np.ones(50, np.float32), 130, epoch=1)
    assert chunk.start_index == 100
    assert chunk.samples.size == 80 and np.all(chunk.samples[:30] == 0)
    assert r.filled_frames == 30


def test_resampler_refuses_overlapping_blocks() -> None:
    r = StationResampler(16_000, 16_000)
    r.process(np.ones(100, np.float32), 0, epoch=1)
    with pytest.raises(ResampleError):
        r.process(np.ones(10, np.float32), 50, epoch=1)


def test_mix_station_is_the_artifacts_channel_mean() -> None:
    x = RNG.standard_normal((500, 3)).astype(np.float32)
    (mono,) = StationSplitter("mix", ["cell"]).split(x)
    np.testing.assert_array_equal(mono, x.T.mean(axis=0, dtype=np.float32))


def test_per_channel_gives_each_channel_its_station() -> None:
    x = RNG.standard_normal((50, 2)).astype(np.float32)
    a, b = StationSplitter("per_channel", ["a", "b"]).split(x)
    np.testing.assert_array_equal(a, x[:, 0])
    np.testing.assert_array_equal(b, x[:, 1])


def test_per_channel_refuses_a_channel_count_that_does_not_match() -> None:
    with pytest.raises(StationLayoutError, match="needs 2 channels"):
        StationSplitter("per_channel", ["a", "b"]).split(np.zeros((10, 3), np.float32))


def test_history_returns_samples_across_its_wrap_point() -> None:
    h = SampleHistory(1000)
    x = np.arange(2500, dtype=np.float32)
    for block, start in _blocks(x, [333]):
        h.append(block, start)
    np.testing.assert_array_equal(h.read(1600, 2500), x[1600:2500])
    with pytest.raises(HistoryError):
        h.read(1400, 1600)


def test_windower_cuts_the_same_windows_as_the_artifact() -> None:
    x = RNG.standard_normal(10_500).astype(np.float32)
    h = SampleHistory(20_000)
    w = WeldWindower(0, 1000)
    got = []
    for block, start in _blocks(x, [700, 1900, 55]):
        h.append(block, start)
        got += w.windows_until(h, h.end_index)
    ref = cut_windows(torch.from_numpy(x), 1000).numpy()
    np.testing.assert_array_equal(np.stack([g.samples for g in got]), ref)
    assert [g.index for g in got] == list(range(10))


def test_windower_aligns_at_a_start_in_the_past_and_stops_at_the_end() -> None:
    x = np.arange(9000, dtype=np.float32)
    h = SampleHistory(20_000)
    h.append(x, 0)
    w = WeldWindower(1500, 1000)
    windows = w.windows_until(h, 5200)
    assert [win.start for win in windows] == [1500, 2500, 3500]
    assert w.whole_windows(5200) == 3


def test_file_segmenter_makes_one_weld_of_the_whole_stream() -> None:
    seg = FileSegmenter()
    first = seg.process(np.zeros(100, np.float32), 0)
    seg.process(np.zeros(100, np.float32), 100)
    assert [(b.kind, b.index) for b in first + seg.close(200)] == [("start", 0), ("end", 200)]


def test_trigger_boundaries_wait_for_the_audio_to_reach_them() -> None:
    seg = TriggerSegmenter(16_000, max_weld_s=100)
    seg.push("start", 20_000)
    assert seg.process(np.zeros(16_000, np.float32), 0) == []
    (start,) = seg.process(np.zeros(16_000, np.float32), 16_000)
    assert (start.kind, start.index) == ("start", 20_000)
    seg.push("stop", 30_000)
    (end,) = seg.process(np.zeros(16_000, np.float32), 32_000)
    assert (end.kind, end.index) == ("end", 30_000)


def test_trigger_stop_without_start_is_ignored_and_counted() -> None:
    seg = TriggerSegmenter(16_000, max_weld_s=100)
    seg.push("stop", 10)
    assert seg.process(np.zeros(100, np.float32), 0) == []
    assert seg.ignored_triggers == 1


def test_trigger_flood_beyond_the_queue_is_refused_and_counted_by_reason() -> None:
    seg = TriggerSegmenter(16_000, max_weld_s=100)
    taken = [seg.push("stop", 10 + k) for k in range(MAX_PENDING_TRIGGERS + 1)]
    assert taken == [True] * MAX_PENDING_TRIGGERS + [False]
    seg.process(np.zeros(16_000, np.float32), 0)
    assert seg.take_ignored() == {
        TriggerIgnored.QUEUE_FULL: 1,
        TriggerIgnored.STOP_WHILE_IDLE: MAX_PENDING_TRIGGERS,
    }
    assert seg.take_ignored() == {}  # each counted once
    assert seg.ignored_triggers == MAX_PENDING_TRIGGERS + 1


def test_trigger_weld_is_cut_at_max_length() -> None:
    seg = TriggerSegmenter(1000, max_weld_s=2)
    seg.push("start", 0)
    seg.process(np.zeros(1000, np.float32), 0)
    out = seg.process(np.zeros(1500, np.float32), 1000)
    assert [(b.kind, b.index) for b in out] == [("end", 2000)]
    assert seg.forced_ends == 1
