"""Arc gate: levels, synthetic welds with known boundaries, streaming == offline, and the
real recordings against their sensor logs."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from deploy.segment.gate import (
    Boundary,
    GateParams,
    GateSegmenter,
    SegmentationError,
    _SlidingMin,
    pair_boundaries,
    segment_recording,
)
from deploy.segment.levels import LEVEL_FLOOR_DB, frame_band_db, frame_rms_db
from deploy.sensorlog import arc_intervals, estimate_clock_offset, read_sensor_log
from tests.support.data import Recording

RATE = 16_000
FLOOR_DBFS = -80.0  # synthetic idle noise (white)
ARC_HZ = 3_000.0  # synthetic "arc": a tone inside the gate's 2-8 kHz band
ARC_DBFS = -45.0  # 35 dB over the floor's in-band power, like a loud real arc
TOL_S = 0.15  # synthetic boundaries: half the smoothing span (0.125 s) plus framing
REAL_TOL_S = 0.5  # acceptance criterion on the real recordings
OFFSET_FRAME_S = 0.05  # envelope frame for the clock offset (s)


def tone(seconds: float, dbfs: float, hz: float = ARC_HZ) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    amplitude = np.sqrt(2.0) * 10.0 ** (dbfs / 20.0)
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def synth(seconds: float, bursts: list[tuple[float, float, float]], seed: int = 0) -> np.ndarray:
    """White noise at FLOOR_DBFS with tone bursts (start_s, end_s, dBFS) added."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 10.0 ** (FLOOR_DBFS / 20.0), round(seconds * RATE)).astype(np.float32)
    for start, end, dbfs in bursts:
        a, b = round(start * RATE), round(end * RATE)
        x[a:b] += tone((b - a) / RATE, dbfs)
    return x


def welds_s(x: np.ndarray, params: GateParams | None = None) -> list[tuple[float, float]]:
    return [(a / RATE, b / RATE) for a, b in segment_recording(x, RATE, params or GateParams())]


def stream(x: np.ndarray, sizes: list[int], params: GateParams, origin: int = 0) -> list:
    gate = GateSegmenter(params, RATE)
    out: list[Boundary] = []
    pos = 0
    for size in sizes:
        out += gate.process(x[pos : pos + size], origin + pos)
        pos += size
    out += gate.process(x[pos:], origin + pos)
    return out + gate.close(origin + x.size)


# -- levels -----------------------------------------------------------------------------------


def test_rms_level_of_a_sine_is_its_rms_in_dbfs() -> None:
    level = frame_rms_db(tone(1.0, -20.0), 800)
    np.testing.assert_allclose(level, -20.0, atol=0.05)


def test_band_level_of_an_in_band_sine_matches_its_rms() -> None:
    level = frame_band_db(tone(1.0, -30.0, hz=5000.0), 800, RATE, 2000.0, 8000.0)
    np.testing.assert_allclose(level, -30.0, atol=0.1)


def test_band_level_ignores_a_loud_sine_below_the_band() -> None:
    level = frame_band_db(tone(1.0, -10.0, hz=200.0), 800, RATE, 2000.0, 8000.0)
    assert level.max() < -80.0


def test_silence_reads_the_level_floor() -> None:
    level = frame_rms_db(np.zeros(1600, dtype=np.float32), 800)
    np.testing.assert_array_equal(level, LEVEL_FLOOR_DB)


def test_levels_refuse_a_partial_frame() -> None:
    with pytest.raises(ValueError, match="whole number"):
        frame_rms_db(np.zeros(801, dtype=np.float32), 800)


# -- parameters -------------------------------------------------------------------------------


def test_params_reject_off_threshold_above_on_threshold() -> None:
    with pytest.raises(ValidationError, match="off_db"):
        GateParams(on_db=10.0, off_db=12.0)


def test_params_reject_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="hangover"):
        GateParams(hangover=1.0)


def test_params_reject_nan() -> None:
    with pytest.raises(ValidationError, match="on_db"):
        GateParams(on_db=float("nan"))


# -- synthetic welds --------------------------------------------------------------------------


def test_burst_gives_one_weld_at_its_boundaries() -> None:
    [(start, end)] = welds_s(synth(12.0, [(3.0, 8.0, ARC_DBFS)]))
    assert start == pytest.approx(3.0, abs=TOL_S)
    assert end == pytest.approx(8.0, abs=TOL_S)


def test_quiet_room_gives_no_weld() -> None:
    assert welds_s(synth(10.0, [])) == []


def test_burst_shorter_than_min_weld_is_discarded_and_counted() -> None:
    x = synth(10.0, [(3.0, 4.0, ARC_DBFS)])
    gate = GateSegmenter(GateParams(min_weld_s=2.0), RATE)
    assert gate.process(x, 0) + gate.close(x.size) == []
    assert gate.discarded_bursts == 1


def test_level_between_thresholds_never_opens_a_weld() -> None:
    # 12 dB over the floor's in-band power: above off_db (6) but below on_db (16).
    in_band_floor = FLOOR_DBFS + 10 * np.log10(6000 / 8000)
    assert welds_s(synth(10.0, [(2.0, 8.0, in_band_floor + 12.0)])) == []


def test_hysteresis_keeps_a_weld_open_between_thresholds() -> None:
    in_band_floor = FLOOR_DBFS + 10 * np.log10(6000 / 8000)
    loud, middle = in_band_floor + 20.0, in_band_floor + 12.0
    x = synth(14.0, [(2.0, 5.0, loud), (5.0, 8.0, middle), (8.0, 10.0, loud)])
    [(start, end)] = welds_s(x)
    assert (start, end) == (pytest.approx(2.0, abs=TOL_S), pytest.approx(10.0, abs=TOL_S))


def test_hangover_bridges_a_short_dropout() -> None:
    x = synth(14.0, [(2.0, 6.0, ARC_DBFS), (6.3, 10.0, ARC_DBFS)])
    assert len(welds_s(x, GateParams(hangover_s=0.5))) == 1


def test_dropout_longer_than_hangover_splits_the_weld() -> None:
    x = synth(14.0, [(2.0, 6.0, ARC_DBFS), (7.0, 11.0, ARC_DBFS)])
    [(_, end1), (start2, _)] = welds_s(x, GateParams(hangover_s=0.5))
    assert end1 == pytest.approx(6.0, abs=TOL_S)
    assert start2 == pytest.approx(7.0, abs=TOL_S)


def test_quieter_lead_in_before_ignition_is_not_part_of_the_weld() -> None:
    # Wire-feed creep: 1 s at 20 dB under the arc, straight before it.
    x = synth(12.0, [(2.0, 3.0, ARC_DBFS - 20.0), (3.0, 9.0, ARC_DBFS)])
    [(start, _)] = welds_s(x)
    assert start == pytest.approx(3.0, abs=TOL_S)


def test_pre_roll_moves_the_start_earlier() -> None:
    [(start, _)] = welds_s(synth(12.0, [(3.0, 8.0, ARC_DBFS)]), GateParams(pre_roll_s=0.5))
    assert start == pytest.approx(2.5, abs=TOL_S)


def test_pre_roll_is_clamped_to_the_stream_start() -> None:
    x = synth(8.0, [(0.5, 5.0, ARC_DBFS)])
    boundaries = stream(x, [], GateParams(pre_roll_s=1.0), origin=5_000)
    assert boundaries[0] == Boundary("start", 5_000)


def test_gain_does_not_move_the_boundaries() -> None:
    x = synth(12.0, [(3.0, 8.0, ARC_DBFS)])
    quiet = (x * np.float32(0.1)).astype(np.float32)
    assert welds_s(quiet) == welds_s(x)


def test_weld_longer_than_max_is_cut_and_counted() -> None:
    x = synth(20.0, [(2.0, 18.0, ARC_DBFS)])
    gate = GateSegmenter(GateParams(max_weld_s=5.0), RATE)
    welds = pair_boundaries(gate.process(x, 0) + gate.close(x.size))
    assert len(welds) == 1  # no new weld while the level stays up
    assert (welds[0][1] - welds[0][0]) / RATE == pytest.approx(5.0, abs=TOL_S)
    assert gate.forced_ends == 1


def test_close_ends_an_open_weld_at_its_last_on_sample() -> None:
    x = synth(8.0, [(2.0, 8.0, ARC_DBFS)])
    gate = GateSegmenter(GateParams(), RATE)
    assert [b.kind for b in gate.process(x, 0)] == ["start"]
    assert gate.in_weld
    [end] = gate.close(x.size)
    assert end.kind == "end"
    assert end.index / RATE == pytest.approx(8.0, abs=TOL_S)
    assert not gate.in_weld


def test_block_before_the_previous_end_is_refused() -> None:
    gate = GateSegmenter(GateParams(), RATE)
    gate.process(np.zeros(1000, dtype=np.float32), 0)
    with pytest.raises(SegmentationError, match="consecutive"):
        gate.process(np.zeros(1000, dtype=np.float32), 500)


def test_gap_between_blocks_is_counted() -> None:
    gate = GateSegmenter(GateParams(), RATE)
    gate.process(np.zeros(1000, dtype=np.float32), 0)
    gate.process(np.zeros(1000, dtype=np.float32), 1500)
    assert gate.gap_samples == 500


def test_nan_samples_are_refused() -> None:
    x = np.zeros(1000, dtype=np.float32)
    x[10] = np.nan
    with pytest.raises(SegmentationError, match="NaN"):
        GateSegmenter(GateParams(), RATE).process(x, 0)


def test_digital_silence_before_the_room_noise_is_kept_out_of_the_noise_floor() -> None:
    # A stream that delivers zeros before the room is heard (a null sink before playback, a
    # muted input): learnt as the floor, the zeros would make the idle noise itself a weld.
    x = np.concatenate((np.zeros(5 * RATE, dtype=np.float32), synth(12.0, [(5.0, 10.0, ARC_DBFS)])))
    gate = GateSegmenter(GateParams(), RATE)
    [(start, end)] = pair_boundaries(gate.process(x, 0) + gate.close(x.size))
    assert (start / RATE, end / RATE) == (
        pytest.approx(10.0, abs=TOL_S),
        pytest.approx(15.0, abs=TOL_S),
    )
    assert gate.silent_frames >= 5 * RATE // round(GateParams().frame_s * RATE)


def test_end_is_reported_once_a_hangover_of_audio_follows_the_last_on_sample() -> None:
    # The smoothing look-ahead counts inside the hang-over: no extra half-span of waiting.
    block = 160  # 10 ms blocks, so the report's position is known to within 10 ms
    x = synth(12.0, [(3.0, 8.0, ARC_DBFS)])
    params = GateParams()
    gate = GateSegmenter(params, RATE)
    for pos in range(0, x.size, block):
        ends = [b for b in gate.process(x[pos : pos + block], pos) if b.kind == "end"]
        if ends:
            break
    [end] = ends
    waited_s = (pos + block - end.index) / RATE
    assert params.hangover_s <= waited_s <= params.hangover_s + block / RATE


@given(st.lists(st.floats(-120.0, 0.0), max_size=60), st.integers(1, 8))
def test_sliding_minimum_equals_the_minimum_of_the_latest_values(
    values: list[float], size: int
) -> None:
    window = _SlidingMin(size)
    for i, value in enumerate(values):
        window.push(value)
        assert window.min() == min(values[max(0, i + 1 - size) : i + 1])


# -- streaming == offline ---------------------------------------------------------------------


@functools.cache
def shift_signal() -> np.ndarray:
    """Two welds, a lead-in, a short burst and a dropout: every state of the gate."""
    return synth(
        24.0,
        [
            (1.0, 2.0, ARC_DBFS - 20.0),
            (2.0, 7.0, ARC_DBFS),
            (7.2, 9.0, ARC_DBFS),
            (11.0, 11.5, ARC_DBFS),
            (14.0, 22.0, ARC_DBFS - 5.0),
        ],
        seed=3,
    )


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=30))
def test_boundaries_do_not_depend_on_block_sizes(sizes: list[int]) -> None:
    x = shift_signal()
    params = GateParams()
    whole = stream(x, [], params)
    assert len(whole) == 4  # the sanity of the reference itself
    assert stream(x, sizes, params) == whole


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20_000), min_size=5, max_size=40))
def test_start_lies_within_lookback_before_the_block_that_reports_it(sizes: list[int]) -> None:
    x = shift_signal()
    gate = GateSegmenter(GateParams(), RATE)
    pos = 0
    starts = 0
    for size in [*sizes, x.size]:
        block = x[pos : pos + size]
        for b in gate.process(block, pos):
            if b.kind == "start":
                starts += 1
                assert pos - b.index <= gate.lookback_samples
        pos += block.size
    assert starts == 2


# -- real recordings --------------------------------------------------------------------------


def read_mono(path: Path) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == RATE, f"{path}: {rate} Hz"
    return samples.mean(axis=1)


def true_arc_s(rec: Recording, samples: np.ndarray) -> tuple[float, float]:
    """Arc start/end from the sensor log, on the audio clock. The offset comes from the
    broadband level envelope (no gate, no thresholds), so it cannot absorb gate errors: one
    number shifts both the start and the end."""
    frame_len = round(OFFSET_FRAME_S * RATE)
    level = frame_rms_db(samples[: samples.size // frame_len * frame_len], frame_len)
    log = read_sensor_log(rec.sensor_csv)
    offset = estimate_clock_offset(log, level, frame_len / RATE)
    arcs = arc_intervals(log)
    return arcs[0][0] + offset, arcs[-1][1] + offset


@pytest.mark.real_data
def test_every_real_weld_is_found_within_half_a_second_of_the_sensor_log(
    recordings: list[Recording],
) -> None:
    failures = []
    for rec in recordings:
        x = read_mono(rec.flac)
        arc_start, arc_end = true_arc_s(rec, x)
        welds = welds_s(x)
        if len(welds) != 1:
            failures.append(f"{rec.run_id}: {len(welds)} welds {welds}")
            continue
        (start, end) = welds[0]
        if abs(start - arc_start) > REAL_TOL_S or abs(end - arc_end) > REAL_TOL_S:
            failures.append(
                f"{rec.run_id}: gate {start:.2f}-{end:.2f} s, log {arc_start:.2f}-{arc_end:.2f} s"
            )
    assert not failures, "\n".join(failures)


@pytest.mark.real_data
def test_shift_of_recordings_with_idle_gaps_gives_one_weld_each(
    recordings: list[Recording], tmp_path: Path
) -> None:
    """One station's shift: the runs of the largest config folder (one setup, one microphone)
    joined by idle gaps. Joining different setups would step the background noise by up to
    14 dB between welds, which the gate cannot tell from an arc (docs/segmentation.md)."""
    gap_s = 6.0
    folders = [rec.config_folder for rec in recordings]
    largest = max(set(folders), key=folders.count)
    chosen = [rec for rec in recordings if rec.config_folder == largest]
    assert len(chosen) >= 5
    parts, expected, cursor = [], [], 0
    for rec in chosen:
        x = read_mono(rec.flac)
        arc_start, arc_end = true_arc_s(rec, x)
        lead_in = x[: round((arc_start - 1.5) * RATE)]  # the file's own idle before ignition
        gap = np.tile(lead_in, int(np.ceil(gap_s * RATE / lead_in.size)))[: round(gap_s * RATE)]
        parts += [gap, x]
        base = (cursor + gap.size) / RATE
        expected.append((base + arc_start, base + arc_end))
        cursor += gap.size + x.size
    path = tmp_path / "shift.flac"
    sf.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    welds = welds_s(read_mono(path))
    assert len(welds) == len(chosen), welds
    for (start, end), (arc_start, arc_end) in zip(welds, expected, strict=True):
        assert start == pytest.approx(arc_start, abs=REAL_TOL_S)
        assert end == pytest.approx(arc_end, abs=REAL_TOL_S)


@pytest.mark.real_data
def test_real_recording_streamed_in_odd_blocks_matches_offline(
    recordings: list[Recording],
) -> None:
    x = read_mono(recordings[0].flac)
    params = GateParams()
    sizes = list(np.random.default_rng(5).integers(1, 6_000, size=x.size // 3_000))
    offline = [Boundary("start", a) for a, _ in segment_recording(x, RATE, params)]
    streamed = stream(x, [int(s) for s in sizes], params)
    assert [b for b in streamed if b.kind == "start"] == offline
    assert pair_boundaries(streamed) == segment_recording(x, RATE, params)
