"""Process data: the track, each weld's process summary, and welds from the arc current."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploy.segment.current import CurrentParams, CurrentSegmenter
from deploy.segment.process import (
    KEEP_MARGIN_S,
    MAX_HOLD_S,
    MAX_SAMPLES_PER_S,
    TRIM_BATCH,
    ProcessSample,
    ProcessTrack,
    current_dropouts,
    summarise,
)
from deploy.segment.protocol import Boundary, SegmentationError, pair_boundaries

RATE = 16_000
PERIOD_S = 0.1  # a power source's ~10 samples per second


def samples(
    currents: list[float], voltage: float = 24.0, t0_s: float = 0.0, wire_per_s: float = 0.06
) -> list[ProcessSample]:
    """One sample per PERIOD_S from t0_s; the wire counter runs while the current is up."""
    out, wire = [], 10.0
    for k, amps in enumerate(currents):
        if amps > 5.0:
            wire += wire_per_s * PERIOD_S
        out.append(
            ProcessSample(
                round((t0_s + k * PERIOD_S) * RATE),
                amps,
                voltage if amps > 5.0 else 0.0,
                wire_feed_m_min=wire_per_s * 60.0 if amps > 5.0 else 0.0,
                wire_consumed_m=wire,
            )
        )
    return out


def welds_from(
    data: list[ProcessSample], seconds: float, params: CurrentParams | None = None
) -> list[tuple[float, float]]:
    """Push all samples first (as replay does), then stream the audio clock."""
    seg = CurrentSegmenter(params or CurrentParams(), RATE)
    for s in data:
        seg.push(s)
    n = round(seconds * RATE)
    block = RATE // 10
    out: list[Boundary] = []
    for pos in range(0, n, block):
        out += seg.process(np.zeros(min(block, n - pos), np.float32), pos)
    out += seg.close(n)
    return [(a / RATE, b / RATE) for a, b in pair_boundaries(out)]


# -- the track ---------------------------------------------------------------------------------


def test_track_skips_and_counts_bad_and_out_of_order_samples() -> None:
    track = ProcessTrack(RATE, keep_s=10.0)
    assert track.push(ProcessSample(100, 150.0))
    assert not track.push(ProcessSample(50, 150.0))  # older than the last
    assert not track.push(ProcessSample(100, 150.0))  # a duplicate
    assert not track.push(ProcessSample(200, math.nan))
    assert not track.push(ProcessSample(300, 150.0, voltage_v=math.inf))
    assert track.push(ProcessSample(400, 150.0, voltage_v=math.nan))  # voltage not reported
    assert (track.bad_samples, track.received, len(track)) == (4, 6, 2)
    assert [s.index for s in track.between(0, 401)] == [100, 400]
    assert track.before(400).index == 100


def test_track_forgets_what_no_weld_can_need() -> None:
    track = ProcessTrack(RATE, keep_s=1.0)
    for k in range(5000):  # 500 s at 10 samples/s
        track.push(ProcessSample(k * 1600, 100.0))
    assert track.latest_index == 4999 * 1600
    # keep_s + KEEP_MARGIN_S = 31 s are needed; it trims in batches of a few hundred samples
    assert len(track) < 31 * 10 + 300
    assert track.between(0, 4999 * 1600 - 70 * RATE) == []


def test_track_holds_at_most_its_cap_and_counts_what_it_drops() -> None:
    # A flood: 100,000 readings inside 7 s, far more than any power source sends.
    track = ProcessTrack(RATE, keep_s=10.0)
    for k in range(100_000):
        assert track.push(ProcessSample(k, 100.0))
    assert track.max_samples == (10 + KEEP_MARGIN_S) * MAX_SAMPLES_PER_S
    assert track.max_samples <= len(track) <= track.max_samples + TRIM_BATCH
    assert track.over_cap == 100_000 - len(track)
    assert track.latest_index == 99_999  # the newest are kept


# -- the summary -------------------------------------------------------------------------------


def test_summary_of_a_steady_weld() -> None:
    data = samples([0.0] * 5 + [150.0] * 100 + [0.0] * 5)  # 10 s of arc at 150 A, 24 V
    end = data[-1].index + 1
    summary = summarise(data, end, RATE)
    assert summary is not None
    assert summary.samples == 110
    assert summary.arc_s == pytest.approx(10.0, abs=0.01)
    assert summary.current_mean_a == pytest.approx(150.0)
    assert summary.current_std_a == pytest.approx(0.0, abs=1e-9)
    assert summary.voltage_mean_v == pytest.approx(24.0)
    assert summary.energy_kj == pytest.approx(150.0 * 24.0 * 10.0 / 1000.0, rel=1e-3)
    assert summary.wire_consumed_m == pytest.approx(0.06 * 10.0, rel=1e-6)
    assert summary.dropouts.count == 0


def test_summary_reports_current_dropouts() -> None:
    currents = [150.0] * 30 + [0.0] * 3 + [150.0] * 30 + [0.0] + [150.0] * 10
    summary = summarise(samples(currents), round(7.4 * RATE), RATE)
    assert summary is not None
    assert summary.dropouts.count == 2
    assert summary.dropouts.longest_s == pytest.approx(0.3, abs=1e-3)
    assert summary.dropouts.total_s == pytest.approx(0.4, abs=1e-3)
    assert summary.arc_s == pytest.approx(7.0, abs=0.01)


def test_summary_without_voltage_or_wire_says_so() -> None:
    data = [ProcessSample(round(k * PERIOD_S * RATE), 120.0 + k) for k in range(20)]
    summary = summarise(data, round(2.0 * RATE), RATE)
    assert summary is not None
    assert summary.voltage_mean_v is None and summary.energy_kj is None
    assert summary.wire_consumed_m is None
    assert summary.current_mean_a == pytest.approx(129.5)
    assert summary.current_std_a == pytest.approx(np.std(np.arange(120.0, 140.0)))


def test_summary_wire_from_feed_speed_when_there_is_no_counter() -> None:
    data = [
        ProcessSample(round(k * PERIOD_S * RATE), 150.0, wire_feed_m_min=6.0) for k in range(50)
    ]
    summary = summarise(data, round(5.0 * RATE), RATE)
    assert summary is not None
    assert summary.wire_consumed_m == pytest.approx(0.5, rel=1e-6)  # 6 m/min for 5 s


def test_a_gap_in_the_data_is_not_arc_time() -> None:
    data = samples([150.0] * 10) + samples([150.0] * 10, t0_s=5.0)
    summary = summarise(data, round(6.0 * RATE), RATE)
    assert summary is not None
    assert summary.arc_s == pytest.approx(1.0 + MAX_HOLD_S - PERIOD_S + 1.0, abs=0.01)


def test_no_samples_no_summary() -> None:
    assert summarise([], 100, RATE) is None


def test_dropout_stretches_lie_between_the_first_and_last_arc_sample() -> None:
    data = samples([0.0, 0.0, 150.0, 0.0, 150.0, 0.0, 0.0])
    assert current_dropouts(data, RATE) == [(data[3].index, data[4].index)]


# -- the current segmenter ---------------------------------------------------------------------


def test_one_weld_from_first_to_last_sample_above_five_amps() -> None:
    data = samples([0.0] * 20 + [3.0] * 10 + [160.0] * 200 + [0.0] * 30)  # creep, then arc
    [(start, end)] = welds_from(data, 30.0)
    assert start == pytest.approx(3.0, abs=1e-3)
    assert end == pytest.approx(22.9, abs=1e-3)


def test_current_dip_under_a_second_is_a_dropout_inside_the_weld() -> None:
    data = samples([160.0] * 50 + [0.0] * 8 + [160.0] * 50 + [0.0] * 30, t0_s=1.0)
    seg = CurrentSegmenter(CurrentParams(), RATE)
    for s in data:
        seg.push(s)
    out = seg.process(np.zeros(20 * RATE, np.float32), 0) + seg.close(20 * RATE)
    [start, end] = out
    assert (start.kind, end.kind) == ("start", "end")
    [dropout] = end.dropouts
    assert (dropout.end - dropout.start) / RATE == pytest.approx(0.8, abs=1e-3)


def test_current_gap_over_a_second_splits_the_weld() -> None:
    data = samples([160.0] * 50 + [0.0] * 15 + [160.0] * 50 + [0.0] * 30)
    assert len(welds_from(data, 20.0)) == 2


def test_a_touch_shorter_than_min_weld_is_discarded_and_counted() -> None:
    seg = CurrentSegmenter(CurrentParams(), RATE)
    for s in samples([0.0] * 5 + [160.0, 160.0] + [0.0] * 20):
        seg.push(s)
    assert seg.process(np.zeros(5 * RATE, np.float32), 0) + seg.close(5 * RATE) == []
    assert seg.discarded_arcs == 1


def test_boundaries_wait_for_the_audio_and_for_the_samples() -> None:
    """Live: samples arrive as the audio does; the start is reported once min_weld_s of arc
    followed it, the end once bridge_s without arc did, never before the audio got there."""
    data = samples([0.0] * 10 + [160.0] * 50 + [0.0] * 40)
    seg = CurrentSegmenter(CurrentParams(), RATE)
    block = RATE // 10
    seen: list[tuple[float, Boundary]] = []
    for k in range(100):
        seg.push(data[k])
        for b in seg.process(np.zeros(block, np.float32), k * block):
            seen.append(((k + 1) * block / RATE, b))
    (t_start, start), (t_end, end) = seen
    assert start.index / RATE == pytest.approx(1.0)
    assert t_start == pytest.approx(1.0 + CurrentParams().min_weld_s + PERIOD_S, abs=0.11)
    assert end.index / RATE == pytest.approx(5.9)
    assert t_end == pytest.approx(5.9 + CurrentParams().bridge_s + PERIOD_S, abs=0.11)


def test_a_start_far_behind_the_audio_is_moved_up_to_the_lookback() -> None:
    seg = CurrentSegmenter(CurrentParams(lookback_s=2.0), RATE)
    seg.process(np.zeros(10 * RATE, np.float32), 0)
    for s in samples([160.0] * 90, t0_s=1.0):  # 9 s of arc arrive at once, 9 s late
        seg.push(s)
    [start] = seg.process(np.zeros(RATE // 10, np.float32), 10 * RATE)
    assert start.index == 10 * RATE - 2 * RATE
    assert seg.late_starts == 1


def test_an_open_weld_ends_when_the_samples_stop_coming() -> None:
    seg = CurrentSegmenter(CurrentParams(stale_s=2.0), RATE)
    block = RATE // 10
    out: list[Boundary] = []
    data = samples([160.0] * 30)
    for k in range(80):
        if k < len(data):
            seg.push(data[k])
        out += seg.process(np.zeros(block, np.float32), k * block)
    assert [b.kind for b in out] == ["start", "end"]
    assert out[1].index / RATE == pytest.approx(2.9)
    assert seg.stale_ends == 1


def test_close_ends_an_open_weld_at_its_last_arc_sample() -> None:
    seg = CurrentSegmenter(CurrentParams(), RATE)
    for s in samples([160.0] * 40):
        seg.push(s)
    first = seg.process(np.zeros(2 * RATE, np.float32), 0)
    assert [b.kind for b in first] == ["start"] and seg.in_weld
    [end] = seg.close(2 * RATE)
    assert end.index / RATE == pytest.approx(2.0)  # the audio ended before the arc did
    assert not seg.in_weld


def test_weld_longer_than_max_is_cut_and_counted() -> None:
    data = samples([160.0] * 200 + [0.0] * 20)
    assert welds_from(data, 25.0, CurrentParams(max_weld_s=8.0)) == [(0.0, 8.0)]


def test_out_of_order_samples_are_counted_and_skipped() -> None:
    seg = CurrentSegmenter(CurrentParams(), RATE)
    seg.push(ProcessSample(1000, 160.0))
    seg.push(ProcessSample(500, 160.0))
    assert seg.samples_out_of_order == 1


def test_block_before_the_previous_end_is_refused() -> None:
    seg = CurrentSegmenter(CurrentParams(), RATE)
    seg.process(np.zeros(1000, np.float32), 0)
    with pytest.raises(SegmentationError, match="before"):
        seg.process(np.zeros(1000, np.float32), 500)
