"""`weldmon replay`: the daemon's pipeline over files gives the artifact's own answer."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from deploy.audio import read_recording
from deploy.loader import DeployModel, load_artifact
from deploy.segment.gate import segment_recording
from monitor.config import MonitorConfig, parse_config
from monitor.replay import replay_files
from tests.support.artifacts import export_untrained
from weldmon.cli import EXIT_FAILURE, main

torch.set_num_threads(1)
P_TOLERANCE = 1e-5  # the bound between replay and the artifact's forward


@pytest.fixture(scope="module")
def project_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_untrained(tmp_path_factory.mktemp("artifact")).path


def _config(model: Path, state: Path, **sections: object) -> MonitorConfig:
    data = {"model": {"path": str(model)}, "state_dir": str(state), "mqtt": {"enabled": False}}
    return parse_config(data | sections)


def _replay(cfg: MonitorConfig, model: DeployModel, files: list[Path], mode: str) -> list[dict]:
    out = io.StringIO()
    asyncio.run(replay_files(cfg, model, files, segmentation=mode, out=out, progress=False))  # type: ignore[arg-type]
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.real_data
@pytest.mark.parametrize("which", ["project", "compat"])
def test_file_mode_replay_equals_the_artifacts_forward_on_every_recording(
    which: str, project_artifact: Path, compat_artifact: Path, recordings: list, tmp_path: Path
) -> None:
    path = project_artifact if which == "project" else compat_artifact
    model = load_artifact(path)
    files = [r.flac for r in recordings]
    results = _replay(_config(path, tmp_path), model, files, "file")
    assert [r["source"]["name"] for r in results] == [str(f) for f in files]
    for rec, result in zip(recordings, results, strict=True):
        label, p = model.forward(read_recording(rec.flac, model.sample_rate).samples)
        assert result["label"] == label, rec.run_id
        assert abs(result["p_defect"] - p) <= P_TOLERANCE, rec.run_id
        assert result["n_windows"] == int(rec.duration_s * model.sample_rate) // model.chunk_samples
        assert result["model_sha256"] == model.sha256
        assert not result["degraded"]


@pytest.mark.real_data
def test_block_size_does_not_change_the_verdict(
    compat_artifact: Path, recordings: list, tmp_path: Path
) -> None:
    model = load_artifact(compat_artifact)
    files = [recordings[0].flac]
    small = _replay(
        _config(compat_artifact, tmp_path, audio={"block_s": 0.037}), model, files, "file"
    )
    large = _replay(
        _config(compat_artifact, tmp_path, audio={"block_s": 1.0}), model, files, "file"
    )
    assert small[0]["p_defect"] == large[0]["p_defect"]


IDLE_HEAD_S = 3.0  # every shared recording is idle (no arc) for its first ~4.5 s


def _shift(recordings: list, n: int, rate: int) -> tuple[np.ndarray, list[int]]:
    """n recordings back to back, each preceded by an extra idle gap cut from its own quiet
    head (real room noise, so the gate's noise floor stays honest); returns the audio and
    each recording's offset in samples."""
    parts, offsets, at = [], [], 0
    for rec in recordings[:n]:
        audio = read_recording(rec.flac, rate).samples[0]
        gap = audio[: int(IDLE_HEAD_S * rate)]
        parts += [gap, audio]
        offsets.append(at + gap.size)
        at += gap.size + audio.size
    return np.concatenate(parts), offsets


def _seconds_between(a: str, b: str) -> float:
    parse = datetime.fromisoformat
    return (parse(b.replace("Z", "+00:00")) - parse(a.replace("Z", "+00:00"))).total_seconds()


@pytest.mark.real_data
def test_gate_replay_of_a_shift_finds_each_weld_where_the_offline_gate_does(
    compat_artifact: Path, recordings: list, tmp_path: Path
) -> None:
    model = load_artifact(compat_artifact)
    rate = model.sample_rate
    shift, offsets = _shift(recordings, 5, rate)
    path = tmp_path / "shift.flac"
    sf.write(path, shift, rate)
    results = _replay(_config(compat_artifact, tmp_path), model, [path], "gate")
    offline = segment_recording(shift, rate)
    assert len(results) == len(offline) == 5
    window_s = model.chunk_samples / rate
    for offset, (start, end), result in zip(offsets, offline, results, strict=True):
        # Each weld lies inside its own recording, and the streamed boundaries are the gate's.
        assert offset <= start < end <= offset + 38 * rate
        started = _seconds_between(results[0]["started_at"], result["started_at"])
        assert started == pytest.approx((start - offline[0][0]) / rate, abs=window_s)
        assert result["duration_s"] == pytest.approx((end - start) / rate, abs=window_s)
        label, p = model.forward(shift[None, start:end])
        assert result["label"] == label
        assert abs(result["p_defect"] - p) <= P_TOLERANCE


@pytest.mark.real_data
def test_per_channel_replay_judges_each_station_separately(
    compat_artifact: Path, recordings: list, tmp_path: Path
) -> None:
    model = load_artifact(compat_artifact)
    a = read_recording(recordings[0].flac, 16_000).samples[0]
    b = read_recording(recordings[5].flac, 16_000).samples[0]
    n = min(a.size, b.size)
    path = tmp_path / "two_cells.flac"
    sf.write(path, np.stack([a[:n], b[:n]], axis=1), 16_000)
    audio = {"channels": 2, "channel_mode": "per_channel", "stations": ["cellA", "cellB"]}
    results = _replay(_config(compat_artifact, tmp_path, audio=audio), model, [path], "file")
    by_station = {r["station"]: r for r in results}
    assert set(by_station) == {"cellA", "cellB"}
    for station, mono in (("cellA", a[:n]), ("cellB", b[:n])):
        label, p = model.forward(mono[None, :])
        assert by_station[station]["label"] == label
        assert abs(by_station[station]["p_defect"] - p) <= P_TOLERANCE


@pytest.mark.real_data
def test_bad_files_give_error_records_and_the_other_files_go_on(
    compat_artifact: Path, recordings: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = recordings[0].flac
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"model: {{path: {compat_artifact}}}\nstate_dir: {tmp_path}\nmqtt: {{enabled: false}}\n"
        "logging: {level: error}\n"
    )
    args = ["replay", "--config", str(config), "--segmentation", "file", "--no-progress"]
    code = main([*args, str(empty), str(text), str(truncated), str(good)])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    errors = [r for r in lines if r["kind"] == "error"]
    results = [r for r in lines if r["kind"] == "weld_result"]
    assert code == EXIT_FAILURE
    assert {e["source"]["name"] for e in errors} == {str(empty), str(text), str(truncated)}
    # The weld cut short by the truncation is still reported, flagged; the good file is whole.
    assert [r["source"]["name"] for r in results] == [str(truncated), str(good)]
    assert results[0]["degraded_reasons"] == ["unreadable_audio"]
    assert not results[1]["degraded"]
    assert "3 failed" in captured.err
