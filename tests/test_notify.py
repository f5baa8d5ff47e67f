"""The systemd notify protocol against a datagram socket the test owns, and the watchdog gate."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.ops.notify import (
    Notifier,
    NotifyError,
    WatchdogGate,
    WatchdogProbe,
    feed_watchdog,
)

RECV_TIMEOUT_S = 2.0  # a datagram on loopback arrives in microseconds
FAST_WATCHDOG_USEC = 100_000  # 0.1 s timeout -> a ping every 0.05 s: a test runs in < 1 s


class SystemdListener:
    """The systemd side: a bound AF_UNIX datagram socket that collects what arrives."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value  # what systemd would put into $NOTIFY_SOCKET

    def receive(self) -> str:
        self.sock.settimeout(RECV_TIMEOUT_S)
        return self.sock.recv(4096).decode()

    def drain(self, within_s: float) -> list[str]:
        """Every datagram that arrives within `within_s`."""
        got = []
        deadline = time.monotonic() + within_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return got


@pytest.fixture
def listener() -> Iterator[SystemdListener]:
    # A short folder of our own: tmp_path can exceed AF_UNIX's 107-byte path limit.
    folder = Path(tempfile.mkdtemp(prefix="wm-notify-"))
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield SystemdListener(sock, str(path))
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        folder.rmdir()


def test_ready_status_watchdog_and_stopping_reach_the_notify_socket(
    listener: SystemdListener,
) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.env_value})
    assert notifier.ready("judging welds on station1")
    assert listener.receive() == "READY=1\nSTATUS=judging welds on station1"
    assert notifier.status("2 welds, 0 defects")
    assert listener.receive() == "STATUS=2 welds, 0 defects"
    assert notifier.watchdog()
    assert listener.receive() == "WATCHDOG=1"
    assert notifier.stopping()
    assert listener.receive() == "STOPPING=1"
    assert notifier.sent == 4


def test_abstract_socket_name_with_at_sign_is_used() -> None:
    name = f"weldmon-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        sock.settimeout(RECV_TIMEOUT_S)
        assert sock.recv(4096) == b"READY=1"


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "10000000"})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert notifier.watchdog_interval_s() is None
    assert notifier.sent == 0 and notifier.send_failures == 0


def test_watchdog_interval_is_half_the_watchdog_timeout(listener: SystemdListener) -> None:
    notifier = Notifier.from_environment(
        {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "20000000"}
    )
    assert notifier.watchdog_timeout_s() == 20.0
    assert notifier.watchdog_interval_s() == 10.0


def test_watchdog_meant_for_another_pid_is_ignored(listener: SystemdListener) -> None:
    env = {
        "NOTIFY_SOCKET": listener.env_value,
        "WATCHDOG_USEC": "20000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    assert Notifier.from_environment(env).watchdog_interval_s() is None


def test_status_text_is_kept_on_one_line(listener: SystemdListener) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.env_value})
    notifier.status("first line\nREADY=1")
    assert listener.receive() == "STATUS=first line READY=1"


def test_extend_timeout_sends_microseconds(listener: SystemdListener) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.env_value})
    notifier.extend_timeout(90.0)
    assert listener.receive() == "EXTEND_TIMEOUT_USEC=90000000"


def test_send_to_a_vanished_socket_is_counted_not_raised(listener: SystemdListener) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.env_value})
    listener.sock.close()
    Path(listener.env_value).unlink()
    assert not notifier.watchdog()
    assert notifier.send_failures == 1


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"NOTIFY_SOCKET": "vsock:2:1234"}, "NOTIFY_SOCKET"),
        ({"NOTIFY_SOCKET": "/" + "x" * 200}, "NOTIFY_SOCKET"),
        ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "soon"}, "WATCHDOG_USEC"),
        ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "0"}, "WATCHDOG_USEC"),
    ],
)
def test_unusable_environment_is_refused_naming_the_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(NotifyError, match=key):
        Notifier.from_environment(env)


# The gate: times are monotonic seconds; "now" is 1000 s into the run.
NOW = 1000.0
GATE = WatchdogGate(max_audio_age_s=5.0, max_pending_age_s=30.0, max_device_attempt_age_s=30.0)


def test_gate_pings_while_audio_flows_and_inference_keeps_up() -> None:
    assert GATE.should_ping(NOW, last_audio_at=NOW - 0.1, oldest_pending_at=NOW - 2.0)
    assert GATE.should_ping(NOW, last_audio_at=NOW - 0.1, oldest_pending_at=None)


def test_gate_stops_pings_when_audio_stalls() -> None:
    verdict = GATE.verdict(NOW, last_audio_at=NOW - 6.0, oldest_pending_at=None)
    assert not verdict.ping
    assert verdict.reasons == ("no audio for 6.0 s (limit 5 s)",)


def test_gate_stops_pings_before_any_audio() -> None:
    assert GATE.verdict(NOW, None, None).reasons == ("no audio yet",)


def test_gate_stops_pings_when_inference_is_stuck() -> None:
    verdict = GATE.verdict(NOW, last_audio_at=NOW - 0.1, oldest_pending_at=NOW - 31.0)
    assert not verdict.ping
    assert verdict.reasons[0].startswith("inference stuck")


def test_gate_keeps_pinging_while_a_lost_device_is_being_retried() -> None:
    assert GATE.should_ping(NOW, NOW - 120.0, None, last_device_attempt_at=NOW - 4.0)


def test_gate_stops_pings_when_the_device_retry_loop_itself_stalls() -> None:
    assert not GATE.should_ping(NOW, NOW - 120.0, None, last_device_attempt_at=NOW - 60.0)


def test_gate_refuses_a_non_positive_limit() -> None:
    with pytest.raises(NotifyError, match="max_audio_age_s"):
        WatchdogGate(max_audio_age_s=0.0)


ages = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@given(audio_age=ages, pending_age=ages, extra=ages)
def test_gate_never_resumes_pings_as_audio_gets_older(
    audio_age: float, pending_age: float, extra: float
) -> None:
    older = GATE.should_ping(NOW, NOW - audio_age - extra, NOW - pending_age)
    newer = GATE.should_ping(NOW, NOW - audio_age, NOW - pending_age)
    assert newer or not older


@given(audio_age=ages, pending_age=ages)
def test_gate_pings_exactly_when_both_ages_are_within_limits(
    audio_age: float, pending_age: float
) -> None:
    expected = audio_age <= GATE.max_audio_age_s and pending_age <= GATE.max_pending_age_s
    assert GATE.should_ping(NOW, NOW - audio_age, NOW - pending_age) == expected


STALL_AFTER_S = 0.3  # audio flows this long in the feeding test, then stops
RUN_FOR_S = 0.8  # the feeding test's whole run
SLACK_S = 0.15  # scheduling slack on a loaded 2-core machine


def _feed_with_stall(notifier: Notifier, listener: SystemdListener) -> tuple[list[float], int]:
    """Run `feed_watchdog` for `RUN_FOR_S`; audio stops after `STALL_AFTER_S`. Returns the
    arrival times of the pings (s since start) and how many pings were withheld."""
    gate = WatchdogGate(max_audio_age_s=0.1, max_pending_age_s=1.0)
    arrivals: list[float] = []
    withheld: list[tuple[str, ...]] = []
    payloads: set[bytes] = set()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        t0 = time.monotonic()
        last_audio = {"at": t0}

        def probe() -> WatchdogProbe:
            now = time.monotonic()
            if now - t0 < STALL_AFTER_S:
                last_audio["at"] = now
            return WatchdogProbe(last_audio["at"], None)

        def listen() -> None:
            while (left := t0 + RUN_FOR_S - time.monotonic()) > 0:
                listener.sock.settimeout(left)
                try:
                    payloads.add(listener.sock.recv(4096))
                except TimeoutError:
                    return
                arrivals.append(time.monotonic() - t0)

        reader = loop.run_in_executor(None, listen)
        task = asyncio.create_task(
            feed_watchdog(notifier, gate, probe, stop, lambda v: withheld.append(v.reasons))
        )
        await asyncio.sleep(RUN_FOR_S)
        stop.set()
        await asyncio.wait_for(task, timeout=RECV_TIMEOUT_S)
        await reader

    asyncio.run(scenario())
    assert payloads == {b"WATCHDOG=1"}
    return arrivals, len(withheld)


def test_feed_watchdog_pings_while_audio_flows_then_stops_when_it_stalls(
    listener: SystemdListener,
) -> None:
    notifier = Notifier.from_environment(
        {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": str(FAST_WATCHDOG_USEC)}
    )
    arrivals, withheld = _feed_with_stall(notifier, listener)
    assert len(arrivals) >= 3  # one per 0.05 s while audio flowed
    # After the stall, pings end once the last block is older than the gate's 0.1 s limit.
    assert max(arrivals) < STALL_AFTER_S + 0.1 + SLACK_S
    assert withheld >= 3


def test_feed_watchdog_returns_at_once_without_a_watchdog(listener: SystemdListener) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.env_value})

    async def scenario() -> None:
        never = WatchdogProbe(None, None)
        await asyncio.wait_for(
            feed_watchdog(notifier, WatchdogGate(), lambda: never, asyncio.Event()), 1.0
        )

    asyncio.run(scenario())
    assert listener.drain(0.05) == []
