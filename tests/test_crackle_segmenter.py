"""Crackle segmenter on synthetic audio: crackle against steady noise, dropouts, a quieter
neighbour, tones, masking, the station's memory, streaming == offline."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from deploy.segment.crackle import CrackleSegmenter
from deploy.segment.crackle_meter import CrackleMeter
from deploy.segment.crackle_params import CrackleParams
from deploy.segment.offline import segment_recording, segment_welds
from deploy.segment.protocol import Boundary, SegmentationError, pair_boundaries

RATE = 16_000
FLOOR_DBFS = -75.0  # idle room: Gaussian white noise
ARC_DBFS = -50.0  # synthetic arc, about as loud as the shared recordings' arcs
TOL_S = 0.2  # synthetic boundaries: the smoothing spans plus a frame


def idle(seconds: float, seed: int = 0, dbfs: float = FLOOR_DBFS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * RATE)) * 10 ** (dbfs / 20)).astype(np.float32)


def crackle(seconds: float, dbfs: float = ARC_DBFS, seed: int = 1) -> np.ndarray:
    """An arc-like sound: 2-8 kHz noise bursts of 2-6 ms at ~150 per second with log-normal
    amplitudes over a weak steady hiss (short-circuit pops and spatter). Its frames read a
    kurtosis of 8-16, at the quiet end of the shared recordings' arcs (14-160)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    x = rng.standard_normal(n) * 0.05
    pos = 0
    while True:
        pos += int(rng.exponential(RATE / 150))
        if pos >= n:
            break
        length = int(rng.uniform(0.002, 0.006) * RATE)
        seg = x[pos : pos + length]
        seg += rng.standard_normal(seg.size) * rng.lognormal(0.0, 1.0) * np.hanning(seg.size)
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spec[(freqs < 2000) | (freqs > 7900)] = 0
    y = np.fft.irfft(spec, n)
    return (y * 10 ** (dbfs / 20) / np.sqrt(np.mean(y**2))).astype(np.float32)


def gaussian_band(seconds: float, dbfs: float, seed: int = 5) -> np.ndarray:
    """Steady 1-8 kHz Gaussian noise (a fan, extraction, a grinder's hiss): no crackle."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[np.fft.rfftfreq(n, 1 / RATE) < 1000] = 0
    y = np.fft.irfft(spec, n)
    return (y * 10 ** (dbfs / 20) / np.sqrt(np.mean(y**2))).astype(np.float32)


def place(base: np.ndarray, at_s: float, part: np.ndarray) -> np.ndarray:
    out = base.copy()
    a = round(at_s * RATE)
    out[a : a + part.size] += part[: out.size - a]
    return out


def welds_s(x: np.ndarray, params: CrackleParams | None = None) -> list[tuple[float, float]]:
    seg = CrackleSegmenter(params or CrackleParams(), RATE)
    return [(a / RATE, b / RATE) for a, b in segment_recording(x, RATE, seg)]


def stream(x: np.ndarray, sizes: list[int], params: CrackleParams) -> list[Boundary]:
    seg = CrackleSegmenter(params, RATE)
    out: list[Boundary] = []
    pos = 0
    for size in sizes:
        out += seg.process(x[pos : pos + size], pos)
        pos += size
    out += seg.process(x[pos:], pos)
    return out + seg.close(x.size)


def weld(seconds: float = 14.0, start: float = 3.0, length: float = 6.0, **kw: float) -> np.ndarray:
    return place(idle(seconds), start, crackle(length, **kw))


# -- the meter --------------------------------------------------------------------------------


def test_gaussian_noise_reads_kurtosis_three_whatever_its_level() -> None:
    meter = CrackleMeter(800, RATE)
    for dbfs in (-90.0, -40.0):
        _, log_k, _ = meter.split(meter.measure(idle(5.0, dbfs=dbfs)[: 100 * 800]))
        k = 10.0**log_k
        assert np.median(k) == pytest.approx(3.0, abs=0.15)


def test_crackle_reads_far_above_three() -> None:
    meter = CrackleMeter(800, RATE)
    _, log_k, _ = meter.split(meter.measure(crackle(5.0)[: 100 * 800]))
    k = 10.0**log_k
    assert np.median(k) > 10.0


def test_band_powers_of_an_in_band_sine_sum_to_its_mean_square() -> None:
    meter = CrackleMeter(800, RATE)
    t = np.arange(8000) / RATE
    x = (0.01 * np.sqrt(2) * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    bands, _, silent = meter.split(meter.measure(x))
    np.testing.assert_allclose(bands.sum(axis=1), 1e-4, rtol=0.02)
    assert not silent.any()


def test_zeros_are_digital_silence_and_read_gaussian() -> None:
    meter = CrackleMeter(800, RATE)
    _, log_k, silent = meter.split(meter.measure(np.zeros(1600, np.float32)))
    assert silent.all()
    np.testing.assert_allclose(log_k, np.log10(3.0))


# -- parameters -------------------------------------------------------------------------------


def test_params_reject_unknown_keys_and_nan() -> None:
    with pytest.raises(ValidationError, match="edge"):
        CrackleParams(edge=3.0)
    with pytest.raises(ValidationError, match="edge_db"):
        CrackleParams(edge_db=float("nan"))


def test_params_reject_a_confirmation_shorter_than_the_shortest_weld() -> None:
    with pytest.raises(ValidationError, match="confirm_s"):
        CrackleParams(confirm_s=1.0, min_weld_s=2.0)


def test_params_reject_a_threshold_at_gaussian_kurtosis() -> None:
    with pytest.raises(ValidationError, match="crackle_on"):
        CrackleParams(crackle_on=3.0)


# -- synthetic welds --------------------------------------------------------------------------


def test_crackle_gives_one_weld_at_its_boundaries() -> None:
    [(start, end)] = welds_s(weld())
    assert start == pytest.approx(3.0, abs=TOL_S)
    assert end == pytest.approx(9.0, abs=TOL_S)


def test_quiet_room_gives_no_weld() -> None:
    assert welds_s(idle(12.0)) == []


def test_steady_loud_noise_is_no_weld() -> None:
    # 30 dB over the room for 4 s: the gate would take it for an arc; it does not crackle.
    assert welds_s(place(idle(12.0), 3.0, gaussian_band(4.0, FLOOR_DBFS + 30.0))) == []


def test_gain_does_not_move_the_boundaries() -> None:
    x = weld()
    assert welds_s((x * np.float32(0.1)).astype(np.float32)) == welds_s(x)


def test_arc_under_white_noise_nearly_as_loud_as_itself_is_found() -> None:
    # 6 dB under the arc broadband, 7 dB in the arc's band: the gate needs 16 dB over it.
    x = weld() + idle(14.0, seed=9, dbfs=ARC_DBFS - 6.0)
    [(start, end)] = welds_s(x)
    assert (start, end) == (pytest.approx(3.0, abs=0.3), pytest.approx(9.0, abs=0.3))


def test_louder_steady_noise_before_ignition_is_not_part_of_the_weld() -> None:
    # Wire-feed creep: 1 s of louder steady noise straight before the arc.
    x = place(weld(), 2.0, gaussian_band(1.0, FLOOR_DBFS + 20.0))
    [(start, _)] = welds_s(x)
    assert start == pytest.approx(3.0, abs=TOL_S)


def test_crackle_shorter_than_min_weld_is_discarded_and_counted() -> None:
    x = weld(length=1.0)
    seg = CrackleSegmenter(CrackleParams(), RATE)
    assert seg.process(x, 0) + seg.close(x.size) == []
    assert seg.discarded_bursts == 1


def test_dropout_under_a_second_stays_inside_one_weld_and_is_reported() -> None:
    x = place(place(idle(16.0), 3.0, crackle(4.0)), 7.8, crackle(4.0, seed=2))
    [w] = segment_welds(x, RATE)
    assert (w.start / RATE, w.end / RATE) == (
        pytest.approx(3.0, abs=TOL_S),
        pytest.approx(11.8, abs=TOL_S),
    )
    [dropout] = w.dropouts
    assert (dropout.end - dropout.start) / RATE == pytest.approx(0.8, abs=0.25)


def test_dropout_of_two_seconds_splits_the_weld() -> None:
    x = place(place(idle(18.0), 3.0, crackle(4.0)), 9.0, crackle(4.0, seed=2))
    [(_, end1), (start2, _)] = welds_s(x)
    # A frame more than TOL_S: the weld's level is the median of its latest ref_s (1 s),
    # which this arc's loud last second raises, so its smoothed end falls under the edge
    # a frame sooner (6.8 s; 6.95 s with ref_s 2).
    assert end1 == pytest.approx(7.0, abs=TOL_S + 0.05)
    assert start2 == pytest.approx(9.0, abs=TOL_S)


def test_loud_noise_over_the_arc_neither_ends_the_weld_nor_counts_as_a_dropout() -> None:
    # A grinder 10 dB over the arc for 1.5 s in the middle of the weld masks the crackle.
    x = place(weld(length=8.0), 6.0, gaussian_band(1.5, ARC_DBFS + 10.0))
    [w] = segment_welds(x, RATE)
    assert (w.start / RATE, w.end / RATE) == (
        pytest.approx(3.0, abs=TOL_S),
        pytest.approx(11.0, abs=TOL_S),
    )
    assert w.dropouts == ()


def test_a_pop_just_after_the_end_does_not_move_the_end() -> None:
    x = place(weld(), 9.6, crackle(0.1, dbfs=ARC_DBFS + 6.0, seed=4))
    [(_, end)] = welds_s(x)
    assert end == pytest.approx(9.0, abs=TOL_S)


def test_a_steady_tone_in_the_band_is_clipped_away() -> None:
    t = np.arange(round(14.0 * RATE)) / RATE
    tone = (10 ** ((ARC_DBFS + 6) / 20) * np.sqrt(2) * np.sin(2 * np.pi * 3150 * t)).astype(
        np.float32
    )
    x = weld() + tone
    [(start, end)] = welds_s(x)
    assert (start, end) == (pytest.approx(3.0, abs=0.3), pytest.approx(9.0, abs=0.3))
    # Without the clip the tone's sub-Gaussian kurtosis masks the arc.
    assert welds_s(x, CrackleParams(tone_clip_db=None)) != welds_s(x)


def test_quieter_arc_before_and_after_stays_out_of_the_weld() -> None:
    # A neighbouring cell 14 dB quieter, on 3 s before ours and 2 s after. The edges may
    # reach into it by up to edge_reach_s (taken for our arc's blurred edges).
    x = place(idle(20.0), 3.0, crackle(13.0, dbfs=ARC_DBFS - 14.0, seed=7))
    [(start, end)] = welds_s(place(x, 6.0, crackle(8.0)))
    reach = CrackleParams().edge_reach_s + 0.1  # plus a frame and a smoothing step
    assert 6.0 - reach <= start <= 6.0 + TOL_S
    assert 14.0 - TOL_S <= end <= 14.0 + reach


def test_a_quiet_weld_after_the_stations_own_is_taken_for_a_neighbour() -> None:
    x = place(place(idle(30.0), 3.0, crackle(6.0)), 15.0, crackle(6.0, dbfs=ARC_DBFS - 14.0))
    seg = CrackleSegmenter(CrackleParams(), RATE)
    [(start, _)] = pair_boundaries(seg.process(x, 0) + seg.close(x.size))
    assert start / RATE == pytest.approx(3.0, abs=TOL_S)
    assert seg.quiet_candidates == 1
    assert len(welds_s(x, CrackleParams(neighbour_db=None))) == 2


def test_the_memory_is_forgotten_when_the_gain_drops() -> None:
    # The microphone's gain drops by 20 dB between two welds: floor and arc drop together,
    # the second weld is the station's own and must be reported.
    first = place(idle(15.0), 3.0, crackle(6.0))
    second = (place(idle(15.0, seed=3), 3.0, crackle(6.0, seed=3)) * np.float32(0.1)).astype(
        np.float32
    )
    assert len(welds_s(np.concatenate((first, second)))) == 2


def test_weld_longer_than_max_is_cut_and_counted() -> None:
    x = weld(seconds=22.0, start=2.0, length=18.0)
    seg = CrackleSegmenter(CrackleParams(max_weld_s=8.0, confirm_s=3.0), RATE)
    b = seg.process(x, 0) + seg.close(x.size)
    welds = pair_boundaries(b)
    assert len(welds) == 1  # no new weld while the crackle goes on
    assert (welds[0][1] - welds[0][0]) / RATE == pytest.approx(8.0, abs=TOL_S)
    assert b[-1].forced and seg.forced_ends == 1


def test_close_ends_an_open_weld_at_its_last_on_sample() -> None:
    x = place(idle(14.0), 3.0, crackle(11.0))
    seg = CrackleSegmenter(CrackleParams(), RATE)
    assert [b.kind for b in seg.process(x, 0)] == ["start"]
    assert seg.in_weld
    [end] = seg.close(x.size)
    assert end.index / RATE == pytest.approx(14.0, abs=TOL_S)
    assert not seg.in_weld


def test_a_weld_shorter_than_the_confirmation_is_reported_at_its_end() -> None:
    x = weld(length=4.0)
    seg = CrackleSegmenter(CrackleParams(), RATE)
    block = RATE // 10
    seen: list[tuple[float, str]] = []
    for pos in range(0, x.size, block):
        seen += [(pos / RATE, b.kind) for b in seg.process(x[pos : pos + block], pos)]
    kinds = [k for _, k in seen]
    assert kinds == ["start", "end"]
    assert seen[0][0] == seen[1][0]  # decided together, once the crackle stopped


def test_digital_silence_before_the_room_is_not_learnt_as_its_floor() -> None:
    x = np.concatenate((np.zeros(5 * RATE, dtype=np.float32), weld()))
    seg = CrackleSegmenter(CrackleParams(), RATE)
    [(start, end)] = pair_boundaries(seg.process(x, 0) + seg.close(x.size))
    assert (start / RATE, end / RATE) == (
        pytest.approx(8.0, abs=TOL_S),
        pytest.approx(14.0, abs=TOL_S),
    )
    assert seg.silent_frames >= 5 * RATE // 800 - 2


def test_block_before_the_previous_end_is_refused() -> None:
    seg = CrackleSegmenter(CrackleParams(), RATE)
    seg.process(np.zeros(1000, dtype=np.float32), 0)
    with pytest.raises(SegmentationError, match="consecutive"):
        seg.process(np.zeros(1000, dtype=np.float32), 500)


def test_gap_between_blocks_is_counted() -> None:
    seg = CrackleSegmenter(CrackleParams(), RATE)
    seg.process(np.zeros(1000, dtype=np.float32), 0)
    seg.process(np.zeros(1000, dtype=np.float32), 1500)
    assert seg.gap_samples == 500


def test_nan_samples_are_refused() -> None:
    x = np.zeros(1000, dtype=np.float32)
    x[10] = np.nan
    with pytest.raises(SegmentationError, match="NaN"):
        CrackleSegmenter(CrackleParams(), RATE).process(x, 0)


def test_process_after_close_is_refused() -> None:
    seg = CrackleSegmenter(CrackleParams(), RATE)
    seg.close(0)
    with pytest.raises(SegmentationError, match="close"):
        seg.process(np.zeros(10, dtype=np.float32), 0)


# -- streaming == offline ---------------------------------------------------------------------


@functools.cache
def shift_signal() -> np.ndarray:
    """Two welds (one with a dropout), a short burst, creep and a quieter neighbour."""
    x = idle(40.0, seed=11)
    x = place(x, 1.0, gaussian_band(1.0, FLOOR_DBFS + 18.0))
    x = place(x, 2.0, crackle(5.0, seed=12))
    x = place(x, 7.6, crackle(3.0, seed=13))
    x = place(x, 13.0, crackle(0.8, seed=14))
    x = place(x, 17.0, crackle(16.0, dbfs=ARC_DBFS - 14.0, seed=15))
    return place(x, 20.0, crackle(10.0, dbfs=ARC_DBFS - 3.0, seed=16))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=30))
def test_boundaries_do_not_depend_on_block_sizes(sizes: list[int]) -> None:
    x = shift_signal()
    params = CrackleParams()
    whole = stream(x, [], params)
    assert [b.kind for b in whole] == ["start", "end", "start", "end"]  # the reference's sanity
    assert whole[1].dropouts  # the first weld's dropout
    assert stream(x, sizes, params) == whole


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20_000), min_size=5, max_size=40))
def test_start_lies_within_lookback_before_the_block_that_reports_it(sizes: list[int]) -> None:
    x = shift_signal()
    seg = CrackleSegmenter(CrackleParams(), RATE)
    pos = 0
    starts = 0
    for size in [*sizes, x.size]:
        block = x[pos : pos + size]
        for b in seg.process(block, pos):
            if b.kind == "start":
                starts += 1
                assert pos - b.index <= seg.lookback_samples
        pos += block.size
    assert starts == 2


def test_offline_welds_equal_the_streamed_boundaries() -> None:
    x = shift_signal()
    sizes = [int(s) for s in np.random.default_rng(3).integers(1, 5000, size=200)]
    assert segment_recording(x, RATE) == pair_boundaries(stream(x, sizes, CrackleParams()))
