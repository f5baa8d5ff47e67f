"""`weldmon replay` with the runs' sensor logs as the welder's process data: current mode cuts
each weld by the arc current, every result carries its process record and where it lies in
its file."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deploy.loader import DeployModel, load_artifact
from deploy.sensorlog import read_sensor_log
from monitor.config import MonitorConfig, parse_config
from monitor.replay import replay_files
from tests.support.arc_truth import recording_with_truth
from tests.support.data import Recording

CURRENT_TOL_S = 0.3  # the acceptance criterion for current mode


@pytest.fixture(scope="module")
def model(compat_artifact: Path) -> DeployModel:
    return load_artifact(compat_artifact)


def _config(model: Path, state: Path) -> MonitorConfig:
    data = {"model": {"path": str(model)}, "state_dir": str(state), "mqtt": {"enabled": False}}
    return parse_config(data)


def _replay(cfg: MonitorConfig, model: DeployModel, files: list[Path], mode: str) -> list[dict]:
    out = io.StringIO()
    asyncio.run(replay_files(cfg, model, files, segmentation=mode, out=out, progress=False))  # type: ignore[arg-type]
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.real_data
def test_current_mode_gives_one_weld_per_recording_on_its_arc_current(
    model: DeployModel, compat_artifact: Path, recordings: list[Recording], tmp_path: Path
) -> None:
    results = _replay(
        _config(compat_artifact, tmp_path), model, [r.flac for r in recordings], "current"
    )
    assert [r["kind"] for r in results] == ["weld_result"] * len(recordings)
    for rec, result in zip(recordings, results, strict=True):
        _, truth = recording_with_truth(rec)
        source = result["source"]
        assert source["name"] == str(rec.flac)
        assert source["start_s"] == pytest.approx(truth.start_s, abs=CURRENT_TOL_S), rec.run_id
        assert source["end_s"] == pytest.approx(truth.end_s, abs=CURRENT_TOL_S), rec.run_id
        assert result["duration_s"] == pytest.approx(source["end_s"] - source["start_s"], abs=1e-3)
        assert result["end_reason"] == "current"
        process = result["process"]
        log = read_sensor_log(rec.sensor_csv)
        on = log.current_a > 5.0
        assert process["arc_s"] == pytest.approx(truth.end_s - truth.start_s, rel=0.05)
        assert process["current_mean_a"] == pytest.approx(
            float(np.mean(log.current_a[on])), rel=0.05
        )
        assert process["voltage_mean_v"] == pytest.approx(
            float(np.mean(log.voltage_v[on])), rel=0.05
        )
        # arc energy: mean current x mean voltage x arc time, within the spread of the product
        rough = process["current_mean_a"] * process["voltage_mean_v"] * process["arc_s"] / 1000
        assert process["energy_kj"] == pytest.approx(rough, rel=0.1)
        arc_rows = np.flatnonzero(on)
        wire = log.wire_consumed_m[arc_rows[-1]] - log.wire_consumed_m[arc_rows[0]]
        assert process["wire_consumed_m"] == pytest.approx(wire, rel=0.05, abs=0.01)
        assert result["dropouts"]["count"] == process["dropouts"]["count"]


@pytest.mark.real_data
def test_every_replayed_result_carries_its_process_record_and_place_in_the_file(
    model: DeployModel, compat_artifact: Path, recordings: list[Recording], tmp_path: Path
) -> None:
    """Crackle mode (the default) with the sensor logs beside the files: the audio cuts the
    welds, the logs fill in each weld's process record."""
    chosen = recordings[::4]
    results = _replay(
        _config(compat_artifact, tmp_path), model, [r.flac for r in chosen], "crackle"
    )
    assert len(results) == len(chosen)
    for rec, result in zip(chosen, results, strict=True):
        _, truth = recording_with_truth(rec)
        assert result["end_reason"] == "crackle"
        assert result["source"]["start_s"] == pytest.approx(truth.start_s, abs=0.5), rec.run_id
        assert result["process"]["arc_s"] == pytest.approx(result["duration_s"], abs=0.6)
        assert result["dropouts"] is not None


def test_current_mode_without_a_sensor_log_is_an_error_line_and_the_others_go_on(
    model: DeployModel, compat_artifact: Path, recordings: list[Recording], tmp_path: Path
) -> None:
    lonely = tmp_path / "no_log.wav"
    sf.write(lonely, np.zeros(16_000 * 3, np.float32), 16_000)
    files = [lonely, recordings[0].flac]
    results = _replay(_config(compat_artifact, tmp_path), model, files, "current")
    assert [r["kind"] for r in results] == ["error", "weld_result"]
    assert results[0]["code"] == "no_process_data"
    assert "no_log.csv" in results[0]["message"]
