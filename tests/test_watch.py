"""`weldmon watch`: the pure state model, the rendering, the command line, and the whole
command run in a real terminal (tmux) against a real Mosquitto while welds are published."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from monitor.events import (
    ErrorEvent,
    Source,
    WeldAlert,
    WeldProgress,
    WeldResult,
    WeldStart,
    new_weld_id,
    status_payload_factory,
    topic_for,
)
from monitor.watch.app import COMMAND, WatchError, options_from_args, parse_broker
from monitor.watch.state import (
    WatchState,
    apply_connection,
    apply_event,
    apply_message,
    initial_state,
)
from monitor.watch.view import render
from tests.support.broker import MosquittoBroker, MqttCollector

SHA = "9fa888fd5505fb57c8c10ffe5d76129779659e3bff0531a420d717f81f9bc83f"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
THRESHOLD = 0.705
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Weld:
    """Builds the events of one weld at one station, as the daemon would."""

    station: str
    started_at: datetime = T0

    def __post_init__(self) -> None:
        self.weld_id = new_weld_id(self.station, self.started_at)
        self._common = {
            "daemon_version": "0.1.0",
            "model_sha256": SHA,
            "station": self.station,
            "weld_id": self.weld_id,
            "source": Source(type="device", name="hw:1"),
        }

    def start(self) -> WeldStart:
        return WeldStart(
            **self._common, started_at=self.started_at, segmentation="gate", threshold=THRESHOLD
        )

    def progress(self, index: int, p: float) -> WeldProgress:
        return WeldProgress(
            **self._common,
            window_index=index,
            window_p_defect=p,
            p_defect=p,
            n_windows=index + 1,
            threshold=THRESHOLD,
            elapsed_s=float(index + 1),
        )

    def alert(self, p: float, n: int) -> WeldAlert:
        return WeldAlert(
            **self._common,
            p_defect=p,
            threshold=THRESHOLD,
            n_windows=n,
            started_at=self.started_at,
            at=self.started_at + timedelta(seconds=n),
        )

    def result(
        self, p: float, n: int = 3, seconds: float = 3.0, confidence: str | None = None
    ) -> WeldResult:
        label = int(p >= THRESHOLD)
        return WeldResult(
            **self._common,
            started_at=self.started_at,
            ended_at=self.started_at + timedelta(seconds=seconds),
            duration_s=seconds,
            label=label,
            label_name="defect" if label else "good_weld",
            p_defect=p,
            threshold=THRESHOLD,
            n_windows=n,
            window_p_max=p,
            degraded=False,
            dropped_frames=0,
            end_reason="gate",
            margin=p - THRESHOLD,
            confidence=confidence,
        )


def fresh() -> WatchState:
    return initial_state("weldmon", "127.0.0.1:1883", history=3)


def feed(state: WatchState, *events: object) -> WatchState:
    for event in events:
        state = apply_event(state, event, T0)  # type: ignore[arg-type]
    return state


# --- state model --------------------------------------------------------------------------


def test_start_then_progress_shows_a_current_weld_with_the_rolling_p_defect():
    weld = Weld("cell1")
    state = feed(fresh(), weld.start(), weld.progress(0, 0.2), weld.progress(1, 0.4))
    current = state.stations["cell1"].current
    assert current is not None
    assert (current.weld_id, current.p_defect, current.n_windows) == (weld.weld_id, 0.4, 2)


def test_progress_without_a_start_opens_the_current_weld_for_a_watcher_started_mid_weld():
    weld = Weld("cell1")
    state = feed(fresh(), weld.progress(4, 0.3))
    assert state.stations["cell1"].current.weld_id == weld.weld_id


def test_result_closes_the_current_weld_and_becomes_the_newest_verdict():
    weld = Weld("cell1")
    state = feed(fresh(), weld.start(), weld.progress(0, 0.9), weld.result(0.9))
    station = state.stations["cell1"]
    assert station.current is None
    assert [(v.weld_id, v.label_name) for v in station.verdicts] == [(weld.weld_id, "defect")]
    assert (station.welds, station.defects) == (1, 1)


def test_alert_marks_the_current_weld_and_its_verdict_and_is_counted():
    weld = Weld("cell1")
    state = feed(fresh(), weld.start(), weld.alert(0.8, 2))
    assert state.stations["cell1"].current.alerted
    state = feed(state, weld.result(0.8))
    station = state.stations["cell1"]
    assert station.verdicts[0].alerted
    assert station.alerts == 1


def test_verdicts_are_newest_first_and_bounded_by_the_history():
    welds = [Weld("cell1", T0 + timedelta(minutes=i)) for i in range(5)]
    state = feed(fresh(), *(w.result(0.1) for w in welds))
    shown = [v.weld_id for v in state.stations["cell1"].verdicts]
    assert shown == [w.weld_id for w in reversed(welds)][:3]
    assert state.stations["cell1"].welds == 5


def test_a_redelivered_event_is_applied_once():
    weld = Weld("cell1")
    result = weld.result(0.9)
    state = feed(fresh(), result, result)
    assert state.stations["cell1"].welds == 1


def test_late_progress_of_a_finished_weld_does_not_reopen_it():
    weld = Weld("cell1")
    state = feed(fresh(), weld.start(), weld.result(0.2), weld.progress(2, 0.2))
    assert state.stations["cell1"].current is None


def test_stations_are_tracked_independently():
    a, b = Weld("cell1"), Weld("cell2")
    state = feed(fresh(), a.start(), b.start(), a.result(0.1))
    assert state.stations["cell1"].current is None
    assert state.stations["cell2"].current.weld_id == b.weld_id


def test_status_message_sets_the_daemon_status_and_an_empty_one_clears_it():
    payload = status_payload_factory("0.1.0", SHA, "weldmon-box")("online")
    state = apply_message(fresh(), "weldmon/status", payload, T0)
    assert state.status is not None and state.status.state == "online"
    assert apply_message(state, "weldmon/status", b"", T0).status is None


def test_messages_that_are_not_weldmon_events_are_counted_not_fatal():
    state = apply_message(fresh(), "weldmon/cell1/weld/result", b"{not json", T0)
    state = apply_message(state, "weldmon/status", b"online", T0)
    assert state.malformed == 2
    assert state.stations == {}


def test_inbound_trigger_messages_are_not_mistaken_for_malformed_events():
    state = apply_message(fresh(), "weldmon/cell1/trigger", b"start", T0)
    assert state.malformed == 0


@pytest.mark.parametrize("topic", ["weldmon/cell1/shadow/result", "weldmon/model/change"])
def test_shadow_verdicts_and_model_changes_are_not_mistaken_for_malformed_events(topic: str):
    # valid messages of their own kinds (docs/mqtt.md), not weld events: watch leaves them be
    state = apply_message(fresh(), topic, b'{"kind": "shadow_result"}', T0)
    assert state.malformed == 0 and state.stations == {}


def test_error_events_are_kept_newest_first():
    errors = [
        ErrorEvent(daemon_version="0.1.0", model_sha256=SHA, code=f"e{i}", message="x")
        for i in range(5)
    ]
    state = feed(fresh(), *errors)
    assert [e.code for e in state.errors] == ["e4", "e3", "e2"]


def test_connection_failures_count_attempts_and_success_resets_them():
    state = apply_connection(fresh(), "disconnected", T0, retry_in_s=1.0, error="refused")
    state = apply_connection(state, "connecting", T0)
    state = apply_connection(state, "disconnected", T0, retry_in_s=2.0)
    assert (state.connection.attempts, state.connection.retry_in_s) == (2, 2.0)
    assert state.connection.last_error == "refused"
    assert apply_connection(state, "connected", T0).connection.attempts == 0


# --- rendering ------------------------------------------------------------------------------


def screen_text(state: WatchState, now: datetime = T0) -> str:
    console = Console(record=True, width=140, force_terminal=False)
    console.print(render(state, now))
    return console.export_text()


def test_screen_shows_each_station_its_verdicts_and_the_alert():
    a, b = Weld("cell1"), Weld("cell2")
    state = feed(fresh(), a.start(), a.alert(0.9, 2), a.result(0.9), b.result(0.1))
    text = screen_text(state)
    assert "station cell1" in text and "station cell2" in text
    assert "defect" in text and "good_weld" in text and "ALERT" in text
    assert a.weld_id in text and b.weld_id in text


def test_screen_marks_a_low_confidence_verdict_and_no_other():
    a, b, c = Weld("cell1"), Weld("cell2"), Weld("cell3")
    state = feed(
        fresh(), a.result(0.72, confidence="low"), b.result(0.1, confidence="high"), c.result(0.2)
    )
    text = screen_text(state)
    assert text.count("low confidence") == 1
    line = next(row for row in text.splitlines() if "low confidence" in row)
    assert a.weld_id in line


def test_screen_shows_the_current_weld_elapsed_time_and_p_defect():
    weld = Weld("cell1")
    text = screen_text(feed(fresh(), weld.start(), weld.progress(6, 0.423)))
    assert "welding   7.0 s" in text
    assert "p 0.423 / thr 0.705" in text


def test_screen_shows_the_daemon_status_with_a_short_model_hash():
    payload = status_payload_factory("0.1.0", SHA, "weldmon-box")("offline")
    text = screen_text(apply_message(fresh(), "weldmon/status", payload, T0))
    assert "OFFLINE" in text and SHA[:12] in text and SHA[:13] not in text


def test_daemon_status_is_marked_last_known_while_the_watcher_is_disconnected():
    payload = status_payload_factory("0.1.0", SHA, "weldmon-box")("online")
    state = apply_message(fresh(), "weldmon/status", payload, T0)
    assert "last known" not in screen_text(apply_connection(state, "connected", T0))
    assert "last known" in screen_text(apply_connection(state, "disconnected", T0))


def test_screen_says_when_the_watcher_itself_is_disconnected():
    state = apply_connection(fresh(), "disconnected", T0, retry_in_s=2.5, error="refused")
    assert "DISCONNECTED (attempt 1, reconnecting in 2.5 s)" in screen_text(state)


# --- command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("broker.lan", ("broker.lan", 1883)),
        ("broker.lan:8883", ("broker.lan", 8883)),
        ("[::1]:1884", ("::1", 1884)),
        ("::1", ("::1", 1883)),
    ],
)
def test_broker_argument_accepts_host_and_optional_port(text: str, expected: tuple[str, int]):
    assert parse_broker(text) == expected


@pytest.mark.parametrize("text", ["host:0", "host:99999", "host:x", ":1883"])
def test_broker_argument_rejects_a_bad_port_or_missing_host(text: str):
    with pytest.raises(WatchError, match="--broker"):
        parse_broker(text)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    COMMAND.configure(parser)
    return parser.parse_args(["--broker", "localhost", *argv])


def test_password_is_read_from_the_password_file_without_its_newline(tmp_path: Path):
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    options = options_from_args(_args("--username", "op", "--password-file", str(secret)))
    assert (options.username, options.password) == ("op", "hunter2")


def test_a_missing_password_file_is_a_usage_error_naming_the_option(tmp_path: Path):
    with pytest.raises(WatchError, match="--password-file"):
        options_from_args(_args("--username", "op", "--password-file", str(tmp_path / "no")))


def test_a_tls_ca_file_turns_tls_on(tmp_path: Path):
    broker_dir = tmp_path / "certs"
    from tests.support.broker import make_test_certificates

    ca = make_test_certificates(broker_dir).ca_file
    assert options_from_args(_args("--tls-ca", str(ca))).tls_context is not None


# --- the command in a real terminal -------------------------------------------------------------

TMUX_COLUMNS = 160
TMUX_ROWS = 60
SCREEN_TIMEOUT_S = 20.0  # python start (~1.5 s on this shared box) + connect + redraw


def require_tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is not None:
        return tmux
    if os.environ.get("CI") == "true":
        pytest.fail("tmux not found; CI=true: the terminal test is required")
    pytest.skip("tmux not found (apt-get install tmux)")


class Terminal:
    """A private tmux server (its own socket) running one command in a fixed-size pane."""

    def __init__(self, tmux: str, socket: Path) -> None:
        self._base = [tmux, "-S", str(socket)]

    def start(self, command: list[str]) -> None:
        # A clean environment: an inherited COLUMNS/LINES (pytest sets them) would override
        # the pane's real size in rich.
        env = ["env", "-i", f"PATH={os.environ['PATH']}", "TERM=xterm-256color", "TZ=UTC"]
        env += [f"HOME={os.environ.get('HOME', '/tmp')}", "LANG=C.UTF-8"]
        subprocess.run(
            [*self._base, "new-session", "-d", "-s", "watch", "-x", str(TMUX_COLUMNS),
             "-y", str(TMUX_ROWS), *env, *command],
            check=True,
            cwd=REPO,
        )  # fmt: skip

    def screen(self) -> str:
        result = subprocess.run(
            [*self._base, "capture-pane", "-p", "-t", "watch"],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + SCREEN_TIMEOUT_S
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {what}; last screen:\n{text}")
            time.sleep(0.2)

    def kill(self) -> None:
        subprocess.run([*self._base, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(require_tmux(), tmp_path / "tmux.sock")
    try:
        yield term
    finally:
        term.kill()


def _start_watch(terminal: Terminal, broker: MosquittoBroker, prefix: str) -> None:
    terminal.start(
        [sys.executable, "-m", "monitor.watch", "--broker", f"{broker.host}:{broker.port}",
         "--prefix", prefix]
    )  # fmt: skip
    terminal.wait_for(lambda s: "watcher: connected" in s, "the watcher connected")


def _publish_retained(broker: MosquittoBroker, topic: str, payload: bytes) -> None:
    mosquitto_pub = shutil.which("mosquitto_pub") or "mosquitto_pub"
    cmd = [mosquitto_pub, "-h", broker.host, "-p", str(broker.port), "-t", topic, "-r", "-q", "1"]
    subprocess.run([*cmd, "-s"], input=payload, check=True, timeout=10)


def _publish(client: MqttCollector, prefix: str, *events: object) -> None:
    for event in events:
        client.publish(topic_for(event, prefix), event.to_json())  # type: ignore[arg-type]


@pytest.mark.broker
def test_watch_in_a_terminal_shows_each_stations_verdicts_and_the_alert(
    terminal: Terminal, mosquitto: MosquittoBroker, mqtt_subscriber
):
    prefix = "plant1"
    publisher = mqtt_subscriber(mosquitto, [f"{prefix}/#"])
    # Retained before the watcher starts, as the daemon leaves it.
    status = status_payload_factory("0.1.0", SHA, "weldmon-line1")("online")
    _publish_retained(mosquitto, f"{prefix}/status", status)
    _start_watch(terminal, mosquitto, prefix)

    good, bad, running = Weld("cell1"), Weld("cell2"), Weld("cell1", T0 + timedelta(minutes=1))
    _publish(publisher, prefix, good.start(), good.progress(0, 0.1), good.result(0.1))
    _publish(publisher, prefix, bad.start(), bad.progress(0, 0.8), bad.alert(0.8, 1))
    _publish(publisher, prefix, bad.result(0.8), running.start(), running.progress(1, 0.333))

    screen = terminal.wait_for(lambda s: bad.weld_id in s and "p 0.333" in s, "every weld")
    cell1 = screen[screen.index("station cell1") : screen.index("station cell2")]
    cell2 = screen[screen.index("station cell2") :]
    good_row = next(line for line in cell1.splitlines() if good.weld_id in line)
    bad_row = next(line for line in cell2.splitlines() if bad.weld_id in line)
    assert "good_weld" in good_row and "ALERT" not in good_row
    assert " defect " in bad_row and "ALERT" in bad_row
    assert bad.weld_id not in cell1 and good.weld_id not in cell2
    assert "welding" in cell1 and "p 0.333 / thr 0.705" in cell1
    assert "daemon: ONLINE" in screen and SHA[:12] in screen


@pytest.mark.broker
def test_watch_says_it_lost_the_broker_and_reconnects_when_it_returns(
    terminal: Terminal, mosquitto: MosquittoBroker, mqtt_subscriber
):
    prefix = "plant1"
    _start_watch(terminal, mosquitto, prefix)
    mosquitto.stop()
    terminal.wait_for(lambda s: "watcher: DISCONNECTED" in s, "the lost connection")
    mosquitto.start()
    terminal.wait_for(lambda s: "watcher: connected" in s, "the reconnection")
    weld = Weld("cell9")
    _publish(mqtt_subscriber(mosquitto, [f"{prefix}/#"]), prefix, weld.result(0.9))
    terminal.wait_for(lambda s: weld.weld_id in s, "a verdict published after the reconnect")
