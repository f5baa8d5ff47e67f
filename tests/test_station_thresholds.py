"""Per-station thresholds: a station's entry in `audio.stations` overrides the artifact's
decision (and alert) threshold for that station only; every event says which threshold judged
it and where it came from; a reload changes them without a restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from pydantic import ValidationError

from deploy.audio import read_recording
from deploy.loader import load_artifact
from monitor.audio.config import AudioConfig
from monitor.config import load_config
from monitor.events import Source, ThresholdSource, WeldAlert
from monitor.pipeline.tracker import ModelInfo, StationThresholds, TrackerOptions, WeldTracker
from monitor.reload import prepare_reload
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ, idle_tail, weld_clip

REPO = Path(__file__).resolve().parents[1]
ARTIFACT, CONFIG = ThresholdSource.ARTIFACT, ThresholdSource.CONFIG
MODEL = ModelInfo("ab" * 32, 16_000, 16_000, 0.05, 0.705)
STARTUP_TIMEOUT_S = 90.0
RESULT_TIMEOUT_S = 60.0
REAL_RUNS = [4, 17, 22]  # manifest rows: two lack-of-fusion, one good weld
RELOAD_RUNS = [6, 17]  # safely idle heads (tests/support/shifts.py)


# ---- config and resolution (pure) ---------------------------------------------------------


def test_station_entries_may_be_names_or_overrides() -> None:
    audio = AudioConfig(
        channels=3,
        channel_mode="per_channel",
        stations=["a", {"name": "b", "threshold": 0.6}, {"name": "c", "alert_threshold": 0.4}],
    )
    assert audio.station_names() == ["a", "b", "c"]
    assert set(audio.station_overrides()) == {"b", "c"}
    assert audio.without_overrides().stations == ["a", "b", "c"]


@pytest.mark.parametrize(
    "stations",
    [
        [{"name": "a", "threshold": 1.5}],
        [{"name": "a", "threshold": float("nan")}],
        [{"name": "a", "treshold": 0.5}],
        [{"name": "a/b"}],
    ],
)
def test_bad_station_entries_are_refused_by_key(stations: list) -> None:
    with pytest.raises(ValidationError):
        AudioConfig(stations=stations)


def test_duplicate_station_names_are_refused_across_both_forms() -> None:
    with pytest.raises(ValidationError, match="names must be unique"):
        AudioConfig(channels=2, channel_mode="per_channel", stations=["a", {"name": "a"}])


def test_thresholds_come_from_the_artifact_unless_the_config_says_otherwise() -> None:
    assert StationThresholds.resolve(0.7) == StationThresholds(0.7, ARTIFACT, 0.7, ARTIFACT)
    assert StationThresholds.resolve(0.7, 0.6) == StationThresholds(0.6, CONFIG, 0.6, CONFIG)
    assert StationThresholds.resolve(0.7, None, 0.5) == StationThresholds(
        0.7, ARTIFACT, 0.5, CONFIG
    )


def _tracker(options: TrackerOptions, station: str) -> WeldTracker:
    return WeldTracker(options, station, Source(type="device", name="t"), 0, 1_700_000_000.0)


def _windows(weld: WeldTracker, probs: list[float]) -> list:
    """Each window, confirmed inside the weld by the segmenter as it comes."""
    out: list = []
    for i, p in enumerate(probs):
        out += weld.add_window(i, p, (i + 1) * 16_000, progress=True)
        out += weld.confirm((i + 1) * 16_000)
    return out


def test_an_override_judges_its_station_and_no_other() -> None:
    options = TrackerOptions(
        MODEL, "test", "gate", overrides={"b": StationThresholds.resolve(0.705, 0.9, 0.85)}
    )
    welds = {s: _tracker(options, s) for s in ("a", "b")}
    events = {s: _windows(t, [0.8, 0.8]) for s, t in welds.items()}
    results = {s: t.result(32_000, "gate") for s, t in welds.items()}
    assert (results["a"].label, results["a"].threshold, results["a"].threshold_source) == (
        1,
        0.705,
        ARTIFACT,
    )
    assert (results["b"].label, results["b"].threshold, results["b"].threshold_source) == (
        0,
        0.9,
        CONFIG,
    )
    alert_a = [e for e in events["a"] if isinstance(e, WeldAlert)]
    assert alert_a and alert_a[0].alert_threshold == 0.705 and alert_a[0].threshold == 0.705
    assert not [e for e in events["b"] if isinstance(e, WeldAlert)]
    start_b = welds["b"].start_event()
    assert (start_b.threshold, start_b.alert_threshold, start_b.alert_threshold_source) == (
        0.9,
        0.85,
        CONFIG,
    )
    assert all(e.threshold_source == CONFIG for e in events["b"])


def test_an_alert_below_the_verdict_fires_early_and_the_result_says_defect() -> None:
    # A station's alert threshold under its decision threshold is a second, more sensitive
    # defect rule: once it alerted, its result cannot say good (issue: alerts on good welds).
    options = TrackerOptions(
        MODEL, "test", "gate", overrides={"a": StationThresholds.resolve(0.705, None, 0.4)}
    )
    weld = _tracker(options, "a")
    alerts = [e for e in _windows(weld, [0.5, 0.5, 0.1]) if isinstance(e, WeldAlert)]
    assert len(alerts) == 1 and alerts[0].alert_threshold == 0.4 and alerts[0].n_windows == 2
    result = weld.result(48_000, "gate")
    assert result.p_defect < 0.705  # the pool alone would say good ...
    assert result.label == 1 and result.alert_rule_met  # ... the alert's evidence says defect


# ---- reload -----------------------------------------------------------------------------------


def _write(path: Path, model: Path, state: Path, audio: dict) -> Path:
    data = {"model": {"path": str(model)}, "state_dir": str(state), "audio": audio}
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_reload_applies_changed_thresholds_and_defers_a_capture_change(tmp_path: Path) -> None:
    model = export_untrained(tmp_path / "artifact").path
    path = _write(tmp_path / "m.yaml", model, tmp_path, {"stations": ["cell1"]})
    running, loaded = load_config(path), load_artifact(model)
    _write(path, model, tmp_path, {"stations": [{"name": "cell1", "threshold": 0.2}]})
    plan = prepare_reload(path, running, loaded)
    assert plan.needs_restart == ()
    assert plan.cfg.audio.station_overrides()["cell1"].threshold == 0.2
    _write(path, model, tmp_path, {"stations": [{"name": "cell1", "threshold": 0.2}], "ring_s": 5})
    plan = prepare_reload(path, running, loaded)
    assert plan.needs_restart == ("audio",) and plan.cfg.audio == running.audio


# ---- real model, real audio, through the pipeline -------------------------------------------


@pytest.mark.real_data
def test_a_station_threshold_changes_that_stations_label_and_not_the_others(
    recordings: list, compat_artifact: Path, tmp_path: Path
) -> None:
    """Both channels of each file carry the same real recording, so both stations see the same
    p_defect: only the threshold can make their labels differ."""
    files = []
    for i in REAL_RUNS:
        mono = read_recording(recordings[i].flac, RATE_HZ).samples[0]
        path = tmp_path / f"{recordings[i].run_id}.wav"
        sf.write(path, np.stack([mono, mono], axis=1), RATE_HZ, subtype="FLOAT")
        files.append(path)

    def replay(stations: list) -> list[dict]:
        config = tmp_path / "replay.yaml"
        audio = {"channels": 2, "channel_mode": "per_channel", "stations": stations}
        config.write_text(
            yaml.safe_dump(
                {
                    "model": {"path": str(compat_artifact)},
                    "state_dir": str(tmp_path),
                    "audio": audio,
                    "logging": {"level": "error"},
                }
            )
        )
        args = ["replay", "--config", str(config), "--segmentation", "file", "--no-progress"]
        done = subprocess.run(
            [sys.executable, "-m", "weldmon.cli", *args, *map(str, files)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
            check=True,
        )
        return [json.loads(line) for line in done.stdout.splitlines()]

    plain = replay(["left", "right"])
    p = {r["source"]["name"]: r["p_defect"] for r in plain if r["station"] == "left"}
    labels = {r["source"]["name"]: r["label"] for r in plain if r["station"] == "left"}
    # For each file, a right-station threshold on the other side of its p_defect from 0.705.
    for name in p:
        flipped = min(1.0, p[name] + 1e-3) if labels[name] == 1 else max(0.0, p[name] - 1e-3)
        overridden = replay(["left", {"name": "right", "threshold": round(flipped, 6)}])
        by = {(r["source"]["name"], r["station"]): r for r in overridden}
        left, right = by[(name, "left")], by[(name, "right")]
        assert left["p_defect"] == pytest.approx(right["p_defect"], abs=1e-6)
        assert left["label"] == labels[name] and left["threshold"] == 0.705
        assert left["threshold_source"] == "artifact"
        assert right["label"] == 1 - labels[name], (name, p[name], flipped)
        assert (
            right["threshold"] == pytest.approx(flipped) and right["threshold_source"] == "config"
        )


# ---- a running daemon reloads them ----------------------------------------------------------


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.real_data
@pytest.mark.slow
def test_sighup_changes_a_stations_threshold_for_the_next_weld(
    pulse: PulseAudio, mosquitto: MosquittoBroker, recordings: list, tmp_path: Path
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(tmp_path, artifact, mosquitto)
    pulse.create_sink("thresholds", RATE_HZ, 1)
    collector = MqttCollector(mosquitto, ["weldmon/+/weld/result"]).start()
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.stderr")
    first, second = (weld_clip(recordings[i].flac) for i in RELOAD_RUNS)
    tail = idle_tail(recordings[RELOAD_RUNS[-1]].flac)
    try:
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        player = pulse.play_array(np.concatenate([first, tail])[:, None], RATE_HZ, "thresholds")
        assert player.wait(60) == 0
        collector.wait_for("weldmon/+/weld/result", 1, RESULT_TIMEOUT_S)
        data = yaml.safe_load(config.read_text())
        data["audio"]["stations"] = [{"name": "cell1", "threshold": 0.0}]
        config.write_text(yaml.safe_dump(data))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("model_reloaded", 60.0)
        player = pulse.play_array(np.concatenate([second, tail])[:, None], RATE_HZ, "thresholds")
        assert player.wait(60) == 0
        collector.wait_for("weldmon/+/weld/result", 2, RESULT_TIMEOUT_S)
    finally:
        code = daemon.stop()
        collector.stop()
    before, after = (json.loads(m.payload) for m in collector.matching("weldmon/+/weld/result"))
    assert code == 0
    assert (before["threshold"], before["threshold_source"]) == (0.5, "artifact")
    assert (after["threshold"], after["threshold_source"]) == (0.0, "config")
    assert after["label"] == 1  # p_defect >= 0 always
    assert not daemon.events("reload_needs_restart")
