"""`weldmon evaluate` in weld mode judges what `weldmon replay` judges, on real recordings."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from deploy.audio import read_recording
from deploy.loader import load_artifact
from deploy.windows import mix_channels
from tests.support.artifacts import export_untrained
from training.evaluate import TOO_SHORT, evaluate
from training.welds import find_welds
from weldmon.cli import main

torch.set_num_threads(1)
P_TOLERANCE = 1e-5  # the bound between evaluate's weld mode and replay


def _replay_results(model: Path, files: list[Path], tmp_path: Path, mode: str, capsys) -> list:
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"model: {{path: {model}}}\nstate_dir: {tmp_path}\nmqtt: {{enabled: false}}\n"
        "logging: {level: error}\n"
    )
    capsys.readouterr()
    args = ["replay", "--config", str(config), "--segmentation", mode, "--no-progress"]
    assert main([*args, *map(str, files)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [r for r in lines if r["kind"] == "weld_result"]


@pytest.mark.real_data
@pytest.mark.slow
def test_weld_mode_equals_replay_on_every_real_recording(
    weld_audio_dir: Path, recordings: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = export_untrained(tmp_path / "model").path
    scores = [
        w.p_defect for w in evaluate(first, weld_audio_dir, mode="weld", segmentation="gate").welds
    ]
    # The same weights with the threshold at the median: both verdicts occur, so a label
    # that differs from replay's can show.
    artifact = export_untrained(tmp_path / "median", threshold=float(np.median(scores))).path
    result = evaluate(artifact, weld_audio_dir, mode="weld", segmentation="gate", workers=2)
    assert not [w for w in result.welds if w.error or w.flag]
    files = [r.flac for r in recordings]
    replayed = _replay_results(artifact, files, tmp_path, "gate", capsys)
    by_file: dict[str, list] = defaultdict(list)
    for r in replayed:
        by_file[r["source"]["name"]].append(r)
    ours: dict[str, list] = defaultdict(list)
    for w in result.welds:
        ours[w.path].append(w)
    assert set(ours) == set(by_file) == {str(f) for f in files}
    labels = set()
    for path, welds in ours.items():
        theirs = by_file[path]
        assert len(welds) == len(theirs), path
        for w, r in zip(welds, theirs, strict=True):
            assert r["label"] == w.label, path
            assert abs(r["p_defect"] - w.p_defect) <= P_TOLERANCE, path
            assert r["n_windows"] == w.n_windows, path
            assert r["duration_s"] == pytest.approx(w.end_s - w.start_s, abs=1e-6), path
            labels.add(w.label)
    assert labels == {0, 1}


@pytest.mark.real_data
def test_weld_mode_judges_the_arc_only_and_file_mode_the_whole_file(
    weld_audio_dir: Path, recordings: list, tmp_path: Path
) -> None:
    artifact = export_untrained(tmp_path / "model").path
    model = load_artifact(artifact)
    one = recordings[0]
    top = "defect_data_weld" if one.is_defect else "good_weld"
    data = tmp_path / "data" / top / one.config_folder / one.run_id
    data.mkdir(parents=True)
    (data / one.flac.name).symlink_to(one.flac)
    (data / one.sensor_csv.name).symlink_to(one.sensor_csv)
    result = evaluate(artifact, tmp_path / "data", mode="both", workers=1)
    (whole,) = result.files
    (weld,) = result.welds
    assert weld.segmentation == "current"  # the CSV is there: its arc current cuts the weld
    mono = mix_channels(torch.from_numpy(read_recording(one.flac, 16000).samples)).numpy()
    (expected,) = find_welds(one.flac, mono, 16000, "current")
    assert (weld.start_s, weld.end_s) == (expected.start / 16000, expected.end / 16000)
    # The arc burns from ~4.5 s to ~31 s of the 38 s file: fewer windows than the whole file.
    assert weld.n_windows == (expected.end - expected.start) // 16000 < whole.n_windows == 38
    label, p = model.forward(mono[None, expected.start : expected.end])
    assert (weld.label, weld.p_defect) == (label, pytest.approx(p, abs=1e-6))
    assert (whole.label, whole.p_defect) == (model.forward(mono[None, :])[0], pytest.approx(
        model.forward(mono[None, :])[1], abs=1e-6))  # fmt: skip


def test_a_weld_shorter_than_one_window_is_flagged_like_the_daemon_does(tmp_path: Path) -> None:
    artifact = export_untrained(tmp_path / "model").path
    run = tmp_path / "data" / "good_weld" / "good_weld_x_01-01-24" / "01-01-24-0001-00"
    run.mkdir(parents=True)
    rng = np.random.default_rng(0)
    audio = np.concatenate(
        [rng.normal(0, 1e-3, 48000), rng.normal(0, 0.3, 8000), rng.normal(0, 1e-3, 48000)]
    ).astype(np.float32)
    sf.write(run / "01-01-24-0001-00.flac", audio, 16000)
    # A sensor log whose arc burns 0.5 s: one weld, no whole window in it.
    rows = ["Date,Time,Part No,Pressure,CO2 Weld Flow,Feed,Primary Weld Current,Wire "
            "Consumed,Secondary Weld Voltage,Remarks "]  # fmt: skip
    for i in range(60):
        amps = 150.0 if 30 <= i < 35 else 0.0
        rows.append(f"01/01/2024,10:00:{i * 0.1:06.3f},x,2.5,0.02,0.26,{amps},10.0,20.0")
    (run / "01-01-24-0001-00.csv").write_text("\n".join(rows) + "\n")
    result = evaluate(artifact, tmp_path / "data", mode="weld", workers=1)
    (weld,) = result.welds
    assert (weld.flag, weld.p_defect, weld.label, weld.judged) == (TOO_SHORT, 0.0, 0, False)
    assert result.weld_metrics["TOO_SHORT_WELDS"] == 1
    assert result.weld_metrics["TOTAL_WELDS"] == 0
