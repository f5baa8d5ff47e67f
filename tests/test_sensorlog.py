"""Sensor log parsing, arc intervals and the log-to-audio clock offset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deploy.segment.levels import frame_band_db, frame_rms_db
from deploy.sensorlog import (
    ARC_CURRENT_A,
    SensorLog,
    SensorLogError,
    arc_intervals,
    estimate_clock_offset,
    read_sensor_log,
)
from tests.support.data import Recording

# The real logs' header, trailing space included.
HEADER = (
    "Date,Time,Part No,Pressure,CO2 Weld Flow,Feed,Primary Weld Current,Wire Consumed,"
    "Secondary Weld Voltage,Remarks "
)
ROW_S = 0.11  # row spacing of the real logs (s)
FRAME_S = 0.05  # envelope frame for offset estimates (s)


def write_log(path: Path, currents: list[float], start: str = "04:10:24.445") -> Path:
    h, m, s = start.split(":")
    t0 = int(h) * 3600 + int(m) * 60 + float(s)
    lines = [HEADER]
    for i, amps in enumerate(currents):
        t = t0 + i * ROW_S
        stamp = f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{t % 60:06.3f}"
        lines.append(f"10/16/2022,{stamp},10-16-22-0022-07,2.49,0.02,0.26,{amps:.2f},10.00,0.00")
    path.write_text("\n".join(lines) + "\n")
    return path


def arc_currents(n_rows: int, on_rows: range) -> list[float]:
    return [130.0 if i in on_rows else 0.0 for i in range(n_rows)]


def test_reads_times_relative_to_first_row_and_current(tmp_path: Path) -> None:
    log = read_sensor_log(write_log(tmp_path / "run.csv", [0.0, 3.2, 145.85]))
    np.testing.assert_allclose(log.time_s, [0.0, ROW_S, 2 * ROW_S], atol=1e-6)
    np.testing.assert_allclose(log.current_a, [0.0, 3.2, 145.85])


def test_skips_blank_lines(tmp_path: Path) -> None:
    path = write_log(tmp_path / "run.csv", [0.0, 150.0])
    path.write_text(path.read_text().replace("\n", "\n\n", 1))
    assert read_sensor_log(path).current_a.size == 2


def test_time_crossing_midnight_keeps_increasing(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    path.write_text(
        f"{HEADER}\n"
        "10/16/2022,23:59:59.900,x,0,0,0,0.00,0,0,\n"
        "10/17/2022,00:00:00.010,x,0,0,0,0.00,0,0,\n"
    )
    np.testing.assert_allclose(read_sensor_log(path).time_s, [0.0, 0.11], atol=1e-6)


def test_unreadable_current_names_file_and_line(tmp_path: Path) -> None:
    path = write_log(tmp_path / "run.csv", [0.0, 1.0, 2.0])
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("1.00", "n/a")
    path.write_text("\n".join(lines))
    with pytest.raises(SensorLogError, match=r"run\.csv:3"):
        read_sensor_log(path)


def test_missing_current_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    path.write_text("Date,Time,Feed\n10/16/2022,04:10:24.445,0.2\n10/16/2022,04:10:24.555,0.2\n")
    with pytest.raises(SensorLogError, match="Primary Weld Current"):
        read_sensor_log(path)


def test_missing_file_is_a_sensor_log_error(tmp_path: Path) -> None:
    with pytest.raises(SensorLogError, match="cannot read"):
        read_sensor_log(tmp_path / "absent.csv")


def test_arc_interval_runs_from_first_to_last_row_above_threshold(tmp_path: Path) -> None:
    log = read_sensor_log(write_log(tmp_path / "run.csv", arc_currents(100, range(20, 60))))
    [(start, end)] = arc_intervals(log)
    assert start == pytest.approx(20 * ROW_S, abs=1e-6)
    assert end == pytest.approx(59 * ROW_S, abs=1e-6)


def test_creep_current_below_threshold_is_not_arc(tmp_path: Path) -> None:
    currents = [ARC_CURRENT_A - 1.0] * 10 + [150.0] * 10
    [(start, _)] = arc_intervals(read_sensor_log(write_log(tmp_path / "run.csv", currents)))
    assert start == pytest.approx(10 * ROW_S, abs=1e-6)


def test_short_current_dropout_stays_one_arc(tmp_path: Path) -> None:
    currents = arc_currents(100, range(20, 60))
    currents[40] = currents[41] = 0.0  # 0.2 s dropout, as in burn-through runs
    assert len(arc_intervals(read_sensor_log(write_log(tmp_path / "run.csv", currents)))) == 1


def test_long_current_gap_splits_arcs(tmp_path: Path) -> None:
    currents = arc_currents(100, range(10, 30)) + arc_currents(100, range(0, 30))
    assert len(arc_intervals(read_sensor_log(write_log(tmp_path / "run.csv", currents)))) == 2


def test_log_without_arc_has_no_intervals(tmp_path: Path) -> None:
    log = read_sensor_log(write_log(tmp_path / "run.csv", [0.0] * 20))
    assert arc_intervals(log) == []


def synthetic_envelope(log: SensorLog, offset_s: float, seconds: float) -> np.ndarray:
    """Audio level that is 25 dB up while the log says arc, shifted by offset_s, with
    +-3 dB of frame-to-frame noise."""
    [(start, end)] = arc_intervals(log)
    t = (np.arange(round(seconds / FRAME_S)) + 0.5) * FRAME_S
    on = (t >= start + offset_s) & (t <= end + offset_s)
    noise = np.random.default_rng(7).uniform(-3.0, 3.0, t.size)
    return -70.0 + 25.0 * on + noise


@pytest.mark.parametrize("true_offset_s", [-1.87, -0.4, 0.0, 1.23])
def test_offset_estimate_recovers_a_known_shift(tmp_path: Path, true_offset_s: float) -> None:
    log = read_sensor_log(write_log(tmp_path / "run.csv", arc_currents(300, range(50, 250))))
    level = synthetic_envelope(log, true_offset_s, seconds=36.0)
    estimate = estimate_clock_offset(log, level, FRAME_S)
    # The log holds each row for 0.11 s, so one row spacing is the resolution.
    assert estimate == pytest.approx(true_offset_s, abs=ROW_S)


def test_offset_estimate_needs_an_arc(tmp_path: Path) -> None:
    log = read_sensor_log(write_log(tmp_path / "run.csv", [0.0] * 300))
    with pytest.raises(SensorLogError, match="no row above"):
        estimate_clock_offset(log, np.full(700, -70.0), FRAME_S)


def test_offset_estimate_rejects_nan_envelope(tmp_path: Path) -> None:
    log = read_sensor_log(write_log(tmp_path / "run.csv", arc_currents(300, range(50, 250))))
    level = np.full(700, -70.0)
    level[3] = np.nan
    with pytest.raises(SensorLogError, match="finite"):
        estimate_clock_offset(log, level, FRAME_S)


def _envelopes(flac: Path) -> tuple[np.ndarray, np.ndarray]:
    samples, rate = sf.read(flac, dtype="float32")
    frame_len = round(FRAME_S * rate)
    whole = samples[: samples.size // frame_len * frame_len]
    return frame_rms_db(whole, frame_len), frame_band_db(whole, frame_len, rate, 2000.0, 8000.0)


@pytest.mark.real_data
def test_real_logs_parse_with_one_arc_inside_the_recording(recordings: list[Recording]) -> None:
    for rec in recordings:
        arcs = arc_intervals(read_sensor_log(rec.sensor_csv))
        assert len(arcs) == 1, f"{rec.run_id}: {arcs}"
        assert 0.0 < arcs[0][0] < arcs[0][1] < rec.duration_s + 3.0, rec.run_id


@pytest.mark.real_data
def test_real_offsets_are_a_few_seconds_and_band_independent(
    recordings: list[Recording],
) -> None:
    """The README promises a second or two; broadband and 2-8 kHz envelopes must agree,
    or the estimate would be following one band's noise rather than the arc."""
    for rec in recordings:
        log = read_sensor_log(rec.sensor_csv)
        broadband, high = _envelopes(rec.flac)
        from_broadband = estimate_clock_offset(log, broadband, FRAME_S)
        from_high = estimate_clock_offset(log, high, FRAME_S)
        assert abs(from_broadband) <= 2.5, f"{rec.run_id}: offset {from_broadband:+.2f} s"
        assert from_broadband == pytest.approx(from_high, abs=0.2), rec.run_id
