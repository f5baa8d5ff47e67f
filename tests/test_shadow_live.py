"""A shadow model in `weldmon run`, end to end: a PulseAudio null sink as the device, a real
Mosquitto the test stops and restarts, a production and a candidate artifact, a shift built
from the real recordings. Every weld gets its production result and a shadow result with the
same weld_id; with the broker away no production verdict is lost (shadow ones may be)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from monitor.config_edit import NEW_SUFFIX
from monitor.promote import AUDIT_FILE
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector, ReceivedMessage
from tests.support.daemon import REPO_ROOT, WeldmonRun, write_monitor_config
from tests.support.http import metrics
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ, as_frames, build_shift
from tests.support.syscall_refusals import require_tool

STARTUP_TIMEOUT_S = 90.0  # daemon start on a loaded 2-core box (torch import, two models)
RESULT_TIMEOUT_S = 30.0  # a weld's result after its audio was played
PLAYBACK_START_S = 1.0  # PulseAudio's ALSA plugin delivers its first block after ~0.5-1.5 s
MQTT_RECONNECT_S = (0.2, 1.0)  # short back-off so the test does not wait out the 60 s cap
SHIFT_RUNS = [4, 6, 17, 5]  # welds with safely idle heads (tests/support/shifts.py)
RESULTS = "weldmon/+/weld/result"
SHADOW_RESULTS = "weldmon/+/shadow/result"
CLI_TIMEOUT_S = 120.0  # `weldmon model promote`: its own start, the daemon's load and answer

pytestmark = [pytest.mark.audio, pytest.mark.broker, pytest.mark.real_data, pytest.mark.slow]


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    return {
        "production": export_untrained(tmp_path / "production", seed=7).path,
        "candidate": export_untrained(tmp_path / "candidate", seed=11).path,
    }


@pytest.fixture
def cleanup() -> list:
    """Daemons and players a test started; killed after it whatever happened."""
    started: list = []
    yield started
    for thing in started:
        if isinstance(thing, WeldmonRun):
            thing.kill()
        elif thing.poll() is None:
            thing.kill()
            thing.wait()


def _unique(messages: list[ReceivedMessage]) -> dict[str, dict]:
    """Payloads by event_id: delivery is at-least-once, consumers deduplicate on it."""
    out: dict[str, dict] = {}
    for m in messages:
        out.setdefault(json.loads(m.payload)["event_id"], json.loads(m.payload))
    return out


def _by_weld(collector: MqttCollector, topics: str) -> dict[str, dict]:
    return {p["weld_id"]: p for p in _unique(collector.matching(topics)).values()}


def _online(m: ReceivedMessage) -> bool:
    live = m.topic == "weldmon/status" and not m.retain  # not a retained, possibly old one
    return live and json.loads(m.payload)["state"] == "online"


def test_every_weld_gets_a_shadow_result_and_a_broker_outage_loses_no_production_verdict(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    recordings: list,
    models: dict[str, Path],
    tmp_path: Path,
    cleanup: list,
) -> None:
    shift = build_shift([recordings[i].flac for i in SHIFT_RUNS])
    pulse.create_sink("shadowcell", RATE_HZ, 1)
    config = write_monitor_config(
        tmp_path,
        models["production"],
        mosquitto,
        shadow={"path": str(models["candidate"])},
        mqtt={
            "client_id": "weldmon-shadow",
            "reconnect_min_s": MQTT_RECONNECT_S[0],
            "reconnect_max_s": MQTT_RECONNECT_S[1],
        },
    )
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"], client_id="line-pc", clean_session=False)
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log")
    cleanup.append(daemon)
    port = daemon.wait_for_log("http_listening", STARTUP_TIMEOUT_S)[0]["port"]
    daemon.wait_for_log("capture_opened", STARTUP_TIMEOUT_S)
    collector.wait_until(lambda ms: any(_online(m) for m in ms), STARTUP_TIMEOUT_S)
    time.sleep(PLAYBACK_START_S)
    player = pulse.play_array(as_frames(shift), RATE_HZ, "shadowcell")
    cleanup.append(player)

    collector.wait_for(SHADOW_RESULTS, 1, RESULT_TIMEOUT_S)  # the first weld, both verdicts
    before_outage = set(_by_weld(collector, SHADOW_RESULTS))
    mosquitto.stop()
    daemon.wait_for_log("weld_result", 2 * RESULT_TIMEOUT_S, count=3)  # two during the outage
    mosquitto.start()
    assert player.wait(shift.shape[0] / RATE_HZ + RESULT_TIMEOUT_S) == 0
    logged = daemon.wait_for_log("weld_result", RESULT_TIMEOUT_S, count=len(SHIFT_RUNS))
    welds = {r["weld_id"] for r in logged}
    collector.wait_until(lambda _: set(_by_weld(collector, RESULTS)) >= welds, RESULT_TIMEOUT_S)
    shadow_logged = daemon.wait_for_log("shadow_result", RESULT_TIMEOUT_S, count=len(welds))
    # a shadow verdict made once the broker is back arrives: wait for the last weld's
    collector.wait_until(
        lambda _: logged[-1]["weld_id"] in _by_weld(collector, SHADOW_RESULTS), RESULT_TIMEOUT_S
    )
    scraped = metrics(port)
    code = daemon.stop()

    assert code == 0, daemon.tail()
    assert len(welds) == len(SHIFT_RUNS)
    production = _by_weld(collector, RESULTS)
    assert set(production) == welds, "no production verdict may be lost"
    assert {r["weld_id"] for r in shadow_logged} == welds, "every weld judged in shadow"
    shadows = _by_weld(collector, SHADOW_RESULTS)
    assert before_outage | {logged[-1]["weld_id"]} <= set(shadows) <= welds
    candidate_sha = shadows[logged[-1]["weld_id"]]["model_sha256"]
    for weld_id, shadow in shadows.items():
        assert shadow["shadow"] is True and shadow["kind"] == "shadow_result"
        assert shadow["model_sha256"] == candidate_sha != production[weld_id]["model_sha256"]
        assert shadow["production_model_sha256"] == production[weld_id]["model_sha256"]
        assert shadow["production_p_defect"] == production[weld_id]["p_defect"]
        assert shadow["agree"] == (shadow["label"] == production[weld_id]["label"])
    shadow_messages = collector.matching(SHADOW_RESULTS)
    assert not any(m.retain for m in shadow_messages)
    assert {m.topic for m in shadow_messages} == {"weldmon/cell1/shadow/result"}
    assert not any(
        json.loads(m.payload).get("shadow") for m in collector.matching("weldmon/+/weld/#")
    ), "a shadow verdict never rides a production topic"
    assert np.isfinite([s["p_defect"] for s in shadows.values()]).all()
    # the shadow's cost on /metrics, apart from production's
    assert scraped["weldmon_shadow_loaded"] == 1.0
    assert scraped["weldmon_shadow_results_total"] == len(welds)
    assert scraped["weldmon_shadow_windows_total"] > 0
    assert scraped["weldmon_shadow_cpu_seconds_total"] > 0.0
    assert scraped["weldmon_inference_cpu_seconds_total"] > 0.0
    # a verdict whose PUBACK was lost counts as lost yet may have arrived
    assert scraped["weldmon_shadow_results_lost_total"] >= len(welds) - len(shadows)


def _weldmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        cwd=REPO_ROOT,
    )


def _play_one_weld(pulse: PulseAudio, flac: Path, collector: MqttCollector, count: int) -> dict:
    """Play one weld into the sink; its production result (the `count`-th one)."""
    weld = build_shift([flac])
    player = pulse.play_array(as_frames(weld), RATE_HZ, "promotecell")
    assert player.wait(weld.shape[0] / RATE_HZ + RESULT_TIMEOUT_S) == 0
    collector.wait_for(RESULTS, count, RESULT_TIMEOUT_S)
    return json.loads(collector.matching(RESULTS)[count - 1].payload)


def test_promote_swaps_the_models_between_welds_and_rollback_restores_the_previous_sha256(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    recordings: list,
    models: dict[str, Path],
    tmp_path: Path,
    cleanup: list,
) -> None:
    pulse.create_sink("promotecell", RATE_HZ, 1)
    config = write_monitor_config(
        tmp_path,
        models["production"],
        mosquitto,
        shadow={"path": str(models["candidate"])},
        mqtt={"client_id": "weldmon-promote"},
    )
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log")
    cleanup.append(daemon)
    daemon.wait_for_log("capture_opened", STARTUP_TIMEOUT_S)
    collector.wait_until(lambda ms: any(_online(m) for m in ms), STARTUP_TIMEOUT_S)
    time.sleep(PLAYBACK_START_S)

    first = _play_one_weld(pulse, recordings[SHIFT_RUNS[0]].flac, collector, 1)
    collector.wait_for(SHADOW_RESULTS, 1, RESULT_TIMEOUT_S)
    shadow = json.loads(collector.matching(SHADOW_RESULTS)[0].payload)
    production_sha, candidate_sha = first["model_sha256"], shadow["model_sha256"]
    assert shadow["weld_id"] == first["weld_id"]

    promoted = _weldmon("model", "promote", "--daemon", str(config), "--by", "tester")
    assert promoted.returncode == 0, promoted.stderr + daemon.tail()
    change = json.loads(promoted.stdout)
    assert change["outcome"] == "applied" and change["by"] == "tester"
    assert (change["sha256_before"], change["sha256_after"]) == (production_sha, candidate_sha)
    on_disk = yaml.safe_load(config.read_text())
    assert on_disk["model"]["sha256"] == candidate_sha and on_disk["shadow"] is None
    second = _play_one_weld(pulse, recordings[SHIFT_RUNS[1]].flac, collector, 2)
    assert second["model_sha256"] == candidate_sha, "welds after the promote use the candidate"

    rolled = _weldmon("model", "rollback", "--daemon", str(config), "--by", "tester")
    assert rolled.returncode == 0, rolled.stderr + daemon.tail()
    assert json.loads(rolled.stdout)["sha256_after"] == production_sha
    assert yaml.safe_load(config.read_text())["model"]["sha256"] == production_sha
    third = _play_one_weld(pulse, recordings[SHIFT_RUNS[2]].flac, collector, 3)
    assert third["model_sha256"] == production_sha

    again = _weldmon("model", "rollback", "--daemon", str(config))
    assert again.returncode == 1 and "no previous model" in again.stderr
    code = daemon.stop()

    assert code == 0, daemon.tail()
    audit = [
        json.loads(line) for line in (tmp_path / "state" / AUDIT_FILE).read_text().splitlines()
    ]
    assert [(a["action"], a["outcome"]) for a in audit] == [
        ("promote", "applied"),
        ("rollback", "applied"),
        ("rollback", "refused"),
    ]
    assert audit[0]["sha256_before"] == production_sha and "daemon_agreement" in audit[0]["figures"]
    changes = [json.loads(m.payload) for m in collector.matching("weldmon/model/change")]
    assert [c["outcome"] for c in changes] == ["applied", "applied", "refused"]
    assert len(collector.matching(SHADOW_RESULTS)) == 1, "no shadow once it was promoted"


def test_sighup_brings_in_a_shadow_and_a_promote_the_config_cannot_follow_changes_nothing(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    models: dict[str, Path],
    tmp_path: Path,
    cleanup: list,
) -> None:
    pulse.create_sink("readonlycell", RATE_HZ, 1)
    mqtt = {"client_id": "weldmon-readonly"}
    config = write_monitor_config(tmp_path, models["production"], mosquitto, mqtt=mqtt)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    # Writing the new config beside the old one fails as on a read-only /etc (ProtectSystem=
    # strict): the kernel's EROFS, injected by strace for that one file.
    staged = config.with_name(config.name + NEW_SUFFIX)
    read_only = [require_tool("strace", "strace"), "-f", "-qq", "--seccomp-bpf", "-P"]
    read_only += [str(staged), "-e", "trace=openat", "-e", "inject=openat:error=EROFS"]
    read_only += ["-o", "/dev/null"]
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log", wrapper=read_only)
    cleanup.append(daemon)
    collector.wait_until(lambda ms: any(_online(m) for m in ms), STARTUP_TIMEOUT_S)
    no_shadow = _weldmon("model", "promote", "--daemon", str(config))
    write_monitor_config(
        tmp_path,
        models["production"],
        mosquitto,
        mqtt=mqtt,
        shadow={"path": str(models["candidate"])},
    )
    os.kill(daemon.pid, signal.SIGHUP)
    (changed,) = daemon.wait_for_log("shadow_model_changed", RESULT_TIMEOUT_S)
    before = config.read_bytes()

    refused = _weldmon("model", "promote", "--daemon", str(config), "--by", "tester")
    code = daemon.stop()

    assert no_shadow.returncode == 1 and "no shadow model is in service" in no_shadow.stderr
    assert changed["old_sha256"] is None and changed["new_sha256"] is not None
    assert refused.returncode == 1, refused.stderr + daemon.tail()
    assert "Read-only file system" in refused.stderr and "nothing was changed" in refused.stderr
    change = json.loads(refused.stdout)
    assert change["outcome"] == "refused" and change["sha256_after"] == change["sha256_before"]
    assert change["shadow_sha256_after"] == changed["new_sha256"], "the shadow keeps running"
    assert config.read_bytes() == before and not staged.exists()
    audit = (tmp_path / "state" / AUDIT_FILE).read_text().splitlines()
    assert [json.loads(line)["reason"] for line in audit][-1] == change["reason"]
    assert code == 0, daemon.tail()
