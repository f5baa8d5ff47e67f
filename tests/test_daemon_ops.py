"""Operations of `weldmon run` end to end: the systemd notify protocol over a socket the test
owns, a dead microphone, metrics and /healthz scraped over HTTP while a shift plays, defect
clips read back against the played audio, and Home Assistant discovery. The daemon is a
subprocess recording from a PulseAudio null sink and publishing to a real Mosquitto.

Each daemon run is a module fixture shared by the tests that read different behaviours off
it, so the suite starts three daemons rather than one per assertion (the box has 2 cores).
Pure parts (the silence watch, the status line) are tested first, without any process.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from monitor.audio.silence import SilenceWatch
from monitor.events import Source, WeldResult
from monitor.ops.status import StatusSummary
from monitor.publish.homeassistant import DISCOVERY_PAYLOAD_SCHEMA
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio
from tests.support.shifts import build_shift

RATE = 16_000  # the sink runs at the model's rate, so the capture is bit-comparable
STARTUP_TIMEOUT_S = 90.0  # torch import and model load on a loaded 2-core box
RESULT_TIMEOUT_S = 30.0
WATCHDOG_USEC = 1_000_000  # WatchdogSec=1 s: pings every 0.5 s
SILENCE_ALARM_S = 1.5  # dead-microphone alarm, short for the test
# After the sink resumes: the stalled stream is declared lost (2 s), reopened, and delivers.
RESUME_S = 6.0
OPS_RUNS = [4, 17]  # manifest rows with safely idle heads (tests/support/shifts.py)
PCM16_STEP = 1.0 / 32768  # clips are 16-bit: one step of full scale

END_TO_END = (pytest.mark.audio, pytest.mark.broker, pytest.mark.real_data, pytest.mark.slow)


def end_to_end(test):
    """The markers of a test that runs the daemon against PulseAudio and Mosquitto."""
    for mark in END_TO_END:
        test = mark(test)
    return test


# -- pure parts ---------------------------------------------------------------------------


def test_silence_watch_alarms_once_per_episode_and_clears_when_sound_returns() -> None:
    watch = SilenceWatch(alarm_s=1.0)
    zeros = np.zeros((1600, 2), np.float32)  # 0.1 s at 16 kHz
    changes = [c for _ in range(15) for c in watch.update(zeros, RATE)]
    assert [(c.channel, c.change) for c in changes] == [(0, "alarm"), (1, "alarm")]
    sound = zeros.copy()
    sound[5, 1] = 0.01
    (cleared,) = watch.update(sound, RATE)
    assert (cleared.channel, cleared.change) == (1, "cleared")
    assert watch.alarmed_channels() == [0]


def test_silence_watch_counts_only_the_trailing_run_of_zeros() -> None:
    watch = SilenceWatch(alarm_s=0.2)
    block = np.zeros((1600, 1), np.float32)
    block[0, 0] = 0.5  # sound at the very start: 1599 zeros after it, under 0.2 s
    assert watch.update(block, RATE) == []
    (alarm,) = watch.update(np.zeros((1700, 1), np.float32), RATE)
    assert alarm.silent_s == pytest.approx((1599 + 1700) / RATE)


def test_status_line_names_welds_the_last_verdict_and_the_link() -> None:
    summary = StatusSummary()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    summary.on_event(
        WeldResult(
            daemon_version="0.1.0",
            model_sha256="ab" * 32,
            station="cell1",
            weld_id="cell1-x",
            source=Source(type="device", name="pulse"),
            started_at=at,
            ended_at=at,
            duration_s=3.0,
            label=1,
            label_name="defect",
            p_defect=0.9,
            threshold=0.5,
            n_windows=3,
            window_p_max=0.95,
            degraded=False,
            dropped_frames=0,
            end_reason="gate",
        )
    )
    line = summary.line("connected", "ab" * 32)
    assert "welds 1 (1 defect" in line and "cell1 defect p=0.90 at 03:04:05Z" in line
    assert "mqtt connected" in line and "model abababababab" in line


# -- the daemon as a process ------------------------------------------------------------


class NotifySocket:
    """An abstract AF_UNIX datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self) -> None:
        self.name = f"@weldmon-test-{uuid.uuid4().hex}"
        self.messages: list[tuple[float, dict[str, str]]] = []  # (monotonic, KEY -> value)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.name[1:])
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            pairs = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), pairs))

    def times(self, key: str) -> list[float]:
        return [t for t, m in list(self.messages) if key in m]

    def wait_for(self, key: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.times(key)
            if found:
                return found[0]
            time.sleep(0.05)
        raise TimeoutError(f"no {key} within {timeout} s; got {self.messages[-5:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(tmp_path_factory.mktemp("broker"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _log_path(config: Path) -> Path:
    return config.with_suffix(".stderr")


def _collector(broker: MosquittoBroker, topics: list[str]) -> MqttCollector:
    return MqttCollector(broker, topics).start()


# -- run 1: notify protocol and the dead microphone -------------------------------------


@dataclass
class NotifyRun:
    notify: list[tuple[float, dict[str, str]]]
    played: tuple[float, float]  # monotonic start/end of the noise played
    suspended: tuple[float, float]  # monotonic span the sink was suspended
    sigterm_at: float
    exit_code: int
    errors: list[dict]  # error events from MQTT
    log_sound_returned: list[dict]


@pytest.fixture(scope="module")
def notify_run(
    pulse_server: PulseAudio, module_broker: MosquittoBroker, tmp_path_factory
) -> NotifyRun:
    folder = tmp_path_factory.mktemp("notify")
    artifact = export_untrained(folder / "artifact").path
    config = write_monitor_config(
        folder,
        artifact,
        module_broker,
        audio={"silence_alarm_s": SILENCE_ALARM_S},
        watchdog={"max_audio_age_s": 1.0, "max_device_attempt_age_s": 1.0},
    )
    pulse_server.create_sink("notify", RATE, 1)
    listener = NotifySocket()
    collector = _collector(module_broker, ["weldmon/error"])
    env = {"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    daemon = WeldmonRun(config, {**pulse_server.subprocess_env(), **env}, _log_path(config))
    try:
        listener.wait_for("READY", STARTUP_TIMEOUT_S)
        # The null sink delivers exact zeros until something plays: a dead microphone.
        collector.wait_for("weldmon/error", 1, 10.0)
        noise = (np.random.default_rng(3).standard_normal((6 * RATE, 1)) * 0.05).astype(np.float32)
        start = time.monotonic()
        player = pulse_server.play_array(noise, RATE, "notify")
        player.wait(30)
        played = (start, time.monotonic())
        pulse_server.suspend_sink("notify", True)
        suspended_at = time.monotonic()
        time.sleep(5.0)
        pulse_server.suspend_sink("notify", False)
        resumed_at = time.monotonic()
        time.sleep(RESUME_S)
        sigterm_at = time.monotonic()
        code = daemon.stop()
        time.sleep(0.3)  # the last datagrams
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()
        listener.close()
        collector.stop()
        pulse_server.remove_sink("notify")
    return NotifyRun(
        notify=list(listener.messages),
        played=played,
        suspended=(suspended_at, resumed_at),
        sigterm_at=sigterm_at,
        exit_code=code,
        errors=[json.loads(m.payload) for m in collector.matching("weldmon/error")],
        log_sound_returned=daemon.events("microphone_sound_returned"),
    )


def _times(run: NotifyRun, key: str) -> list[float]:
    return [t for t, m in run.notify if key in m]


@end_to_end
def test_ready_comes_once_with_a_status_line(notify_run: NotifyRun) -> None:
    ready = [m for _, m in notify_run.notify if "READY" in m]
    assert len(ready) == 1
    assert ready[0]["READY"] == "1" and "welds 0" in ready[0]["STATUS"]


@end_to_end
def test_watchdog_pings_while_audio_flows(notify_run: NotifyRun) -> None:
    start, end = notify_run.played
    pings = [t for t in _times(notify_run, "WATCHDOG") if start <= t <= end]
    interval_s = WATCHDOG_USEC / 1e6 / 2
    assert len(pings) >= (end - start) / interval_s - 2, pings
    assert max(np.diff(pings)) < 2 * interval_s


@end_to_end
def test_watchdog_pings_stop_while_the_sink_delivers_no_audio(notify_run: NotifyRun) -> None:
    suspended, resumed = notify_run.suspended
    # The gate needs max_audio_age_s (1 s) without a block before it withholds.
    pings = _times(notify_run, "WATCHDOG")
    assert [t for t in pings if suspended + 1.6 <= t <= resumed] == []
    assert [t for t in pings if resumed < t < notify_run.sigterm_at], "pings never resumed"


@end_to_end
def test_stopping_is_announced_on_sigterm_and_the_daemon_exits_cleanly(
    notify_run: NotifyRun,
) -> None:
    assert notify_run.exit_code == 0
    stopping = _times(notify_run, "STOPPING")
    assert len(stopping) == 1 and stopping[0] >= notify_run.sigterm_at
    assert not [t for t in _times(notify_run, "WATCHDOG") if t > stopping[0]]


@end_to_end
def test_a_silent_stream_raises_one_dead_microphone_error_until_sound_returns(
    notify_run: NotifyRun,
) -> None:
    dead = [e for e in notify_run.errors if e["code"] == "dead_microphone"]
    assert dead, notify_run.errors
    assert "probable dead microphone" in dead[0]["message"] and dead[0]["station"] == "cell1"
    # One event for the boot silence; sound returned when the noise played.
    assert notify_run.log_sound_returned


@end_to_end
def test_a_missing_device_at_boot_extends_the_start_timeout_and_keeps_the_watchdog_fed(
    pulse_server: PulseAudio, module_broker: MosquittoBroker, tmp_path: Path
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(
        tmp_path,
        artifact,
        module_broker,
        audio={"device": "no-such-input-device", "retry_min_s": 0.2, "retry_max_s": 0.5},
        watchdog={"max_audio_age_s": 1.0, "max_device_attempt_age_s": 2.0},
    )
    listener = NotifySocket()
    env = {"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    daemon = WeldmonRun(config, {**pulse_server.subprocess_env(), **env}, _log_path(config))
    try:
        first_extend = listener.wait_for("EXTEND_TIMEOUT_USEC", STARTUP_TIMEOUT_S)
        time.sleep(3.0)
        code = daemon.stop()
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()
        listener.close()
    assert code == 0
    assert not listener.times("READY")  # no audio, so not ready
    key = "EXTEND_TIMEOUT_USEC"
    extends = [int(m[key]) for _, m in listener.messages if key in m]
    assert len(extends) >= 3 and min(extends) > 0
    # Retrying a missing device is an outage being handled, not a hang: pings go on.
    assert len([t for t in listener.times("WATCHDOG") if t > first_extend]) >= 4


# -- run 2: metrics, /healthz, clips, Home Assistant ------------------------------------


@dataclass
class OpsRun:
    played: np.ndarray
    results: list[dict]
    scrapes: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    health: list[tuple[int, dict]] = field(default_factory=list)
    discovery_first: list = field(default_factory=list)
    discovery_after_birth: list = field(default_factory=list)
    discovery_retained: list = field(default_factory=list)  # what a late subscriber gets
    exit_code: int = -1


def _scrape_metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def _healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def ops_run(
    pulse_server: PulseAudio, module_broker: MosquittoBroker, recordings: list, tmp_path_factory
) -> OpsRun:
    folder = tmp_path_factory.mktemp("ops")
    # threshold 0: every judged weld is a defect, so policy "defect" keeps every clip.
    artifact = export_untrained(folder / "artifact", threshold=0.0).path
    config = write_monitor_config(
        folder,
        artifact,
        module_broker,
        clips={"policy": "defect"},
        homeassistant={"enabled": True},
    )
    shift = build_shift([recordings[i].flac for i in OPS_RUNS])
    pulse_server.create_sink("ops", RATE, 1)
    collector = _collector(module_broker, ["weldmon/#", "homeassistant/#"])
    daemon = WeldmonRun(config, pulse_server.subprocess_env(), _log_path(config))
    run = OpsRun(played=shift, results=[])
    try:
        port = daemon.wait_for_log("http_listening", STARTUP_TIMEOUT_S)[0]["port"]
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        collector.wait_for("homeassistant/+/+/+/config", 2, 10.0)
        run.discovery_first = collector.matching("homeassistant/+/+/+/config")
        collector.publish("homeassistant/status", b"online")
        collector.wait_for("homeassistant/+/+/+/config", 4, 10.0)
        run.discovery_after_birth = collector.matching("homeassistant/+/+/+/config")
        late = _collector(module_broker, ["homeassistant/+/+/+/config"])
        run.discovery_retained = late.wait_for("homeassistant/+/+/+/config", 2, 10.0)
        late.stop()
        player = pulse_server.play_array(shift[:, None], RATE, "ops")
        while player.poll() is None:
            run.scrapes.append((time.monotonic(), _scrape_metrics(port)))
            run.health.append(_healthz(port))
            time.sleep(1.0)
        collector.wait_for("weldmon/+/weld/result", len(OPS_RUNS), RESULT_TIMEOUT_S)
        time.sleep(1.0)  # clip writes land on their own thread
        run.scrapes.append((time.monotonic(), _scrape_metrics(port)))
    finally:
        run.exit_code = daemon.stop()
        collector.stop()
        pulse_server.remove_sink("ops")
    run.results = [json.loads(m.payload) for m in collector.matching("weldmon/+/weld/result")]
    return run


@end_to_end
def test_metrics_move_while_a_shift_plays(ops_run: OpsRun) -> None:
    first, last = ops_run.scrapes[0][1], ops_run.scrapes[-1][1]
    frames = [s["weldmon_audio_frames_total"] for _, s in ops_run.scrapes]
    assert all(b > a for a, b in itertools.pairwise(frames)), frames
    assert last["weldmon_windows_inferred_total"] > first["weldmon_windows_inferred_total"]
    n = len(ops_run.results)
    assert last["weldmon_welds_total{label=defect,station=cell1}"] == n
    assert last["weldmon_inference_latency_seconds_count"] == last["weldmon_windows_inferred_total"]
    assert last["weldmon_mqtt_connected"] == 1.0
    assert last["weldmon_model_loaded"] == 1.0


@end_to_end
def test_healthz_is_ok_while_audio_flows_and_the_outbox_drains(ops_run: OpsRun) -> None:
    codes = [code for code, _ in ops_run.health]
    assert codes and set(codes) == {200}, ops_run.health
    assert ops_run.health[-1][1]["checks"]["mqtt_connected"] is True


@end_to_end
def test_a_defect_clip_reads_back_with_the_played_samples(ops_run: OpsRun) -> None:
    assert len(ops_run.results) == len(OPS_RUNS) and ops_run.exit_code == 0
    played = ops_run.played.astype(np.float64)
    for result in ops_run.results:
        assert result["label"] == 1
        clip, rate = sf.read(result["clip_path"], dtype="float64")
        assert rate == RATE
        assert clip.size == round(result["duration_s"] * RATE)
        # Where in the played shift the clip sits: the peak of the cross-correlation.
        spectrum = np.fft.rfft(played, 2 * played.size) * np.conj(
            np.fft.rfft(clip, 2 * played.size)
        )
        lag = int(np.argmax(np.fft.irfft(spectrum)[: played.size - clip.size + 1]))
        error = np.abs(clip - played[lag : lag + clip.size])
        assert error.max() <= PCM16_STEP, (lag, error.max())
        sidecar = json.loads(Path(result["clip_path"]).with_suffix(".json").read_text())
        assert sidecar["result"]["weld_id"] == result["weld_id"]
        assert len(sidecar["window_probs"]) == result["n_windows"]


@end_to_end
def test_homeassistant_discovery_is_retained_valid_and_resent_on_ha_birth(
    ops_run: OpsRun,
) -> None:
    first = ops_run.discovery_first
    assert len(first) == 2  # one station: a "defect" binary_sensor and a "p_defect" sensor
    validator = Draft202012Validator(DISCOVERY_PAYLOAD_SCHEMA)
    for message in first:
        validator.validate(json.loads(message.payload))
    assert len(ops_run.discovery_after_birth) == 4  # both re-sent after HA's "online"
    assert sorted(m.topic for m in ops_run.discovery_retained) == sorted(m.topic for m in first)
    assert all(m.retain for m in ops_run.discovery_retained)
