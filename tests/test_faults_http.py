"""Idle and half-sent HTTP connections against /metrics and /healthz (a real client: plain
TCP sockets that send half a request and wait, and urllib for the real requests).

The server must stay bounded (fixed threads, a connection cap, request timeouts), and
exhausting it must never cost capture, MQTT or reload anything: the daemon test runs
`weldmon run` with its open-file limit at 64, as in the report, on a PulseAudio null sink
with a real Mosquitto.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from monitor.ops.health import HealthServer, HealthSettings
from monitor.ops.metrics import Metrics
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.http import healthz
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ, as_frames, build_shift
from tests.test_metrics_health import HEALTHY

HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: weldmon\r\n"  # never the blank line
CONNECT_WAIT_S = 3.0  # how long the idle clients wait for their connects to complete
SERVED_WITHIN_S = 30.0  # /healthz again once the idle clients are gone


@contextmanager
def idle_clients(host: str, port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections opened without blocking; each that completes sends half a request
    and then nothing. Closed on exit."""
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((host, port))
            socks.append(sock)
            if code in (0, errno.EINPROGRESS):
                sel.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + CONNECT_WAIT_S
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                sock = key.fileobj  # type: ignore[assignment]
                sel.unregister(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    with contextlib.suppress(OSError):  # reset by a server giving up: fine
                        sock.send(HALF_REQUEST)
        sel.close()  # only the client sockets stay open while the caller measures
        yield socks
    finally:
        sel.close()
        for sock in socks:
            sock.close()


def own_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def test_idle_half_sent_connections_hold_no_threads_and_at_most_the_cap_of_descriptors() -> None:
    settings = HealthSettings(host="127.0.0.1", port=0, max_connections=4, request_timeout_s=1.0)
    with HealthServer(settings, Metrics().registry, lambda: HEALTHY) as server:
        host, port = server.address
        assert healthz(port)[0] == 200
        threads, fds = threading.active_count(), own_fds()
        with idle_clients(host, port, 100) as socks:
            held_threads = threading.active_count()
            server_fds = own_fds() - fds - len(socks)  # the clients' own sockets are ours too
        # Once they are gone, the next request is served (no slot stays taken).
        deadline = time.monotonic() + SERVED_WITHIN_S
        while True:
            try:
                status, _ = healthz(port)
                break
            except OSError:
                assert time.monotonic() < deadline, "/healthz never served again"
    assert held_threads == threads, "no thread per connection"
    assert server_fds <= settings.max_connections, "no descriptor beyond the cap"
    assert status == 200


def test_a_half_sent_request_is_closed_after_the_request_timeout() -> None:
    settings = HealthSettings(host="127.0.0.1", port=0, max_connections=4, request_timeout_s=1.0)
    with HealthServer(settings, Metrics().registry, lambda: HEALTHY) as server:
        host, port = server.address
        with socket.create_connection((host, port), timeout=10.0) as sock:
            sock.sendall(HALF_REQUEST)
            started = time.monotonic()
            assert sock.recv(1024) == b"", "the server closes it without an answer"
            waited = time.monotonic() - started
    # channel_timeout plus up to one cleanup interval; never the 10 s of the client
    assert 0.9 <= waited < 5.0


STARTUP_TIMEOUT_S = 90.0
NOFILE = 64  # the report's limit: 53 idle connections used to starve MQTT and reload
IDLE = 200
MAX_CONNECTIONS = 8


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.real_data
@pytest.mark.slow
def test_exhausted_http_never_costs_capture_mqtt_or_reload_with_nofile_64(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    recordings: list,
    tmp_path: Path,
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(
        tmp_path,
        artifact,
        mosquitto,
        http={"max_connections": MAX_CONNECTIONS, "request_timeout_s": 3.0},
        mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
    )
    pulse.create_sink("busy", RATE_HZ, 1)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log", nofile=NOFILE)
    player = None
    try:
        port = daemon.wait_for_log("http_listening", STARTUP_TIMEOUT_S)[0]["port"]
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
        assert healthz(port)[0] in (200, 503)
        threads, fds = daemon.threads(), daemon.open_fds()
        with idle_clients("127.0.0.1", port, IDLE):
            held = (daemon.threads(), daemon.open_fds())
            # MQTT: a broker restart needs a new socket.
            mosquitto.restart()
            daemon.wait_for_log("mqtt.connected", 60.0, count=2)
            # Reload: opens the model file again and starts an inference thread.
            daemon.proc.send_signal(signal.SIGHUP)
            daemon.wait_for_log("model_reloaded", 60.0)
            # Capture: a weld played now is judged and published.
            shift = build_shift([recordings[4].flac])
            player = pulse.play_array(as_frames(shift), RATE_HZ, "busy")
            results = collector.wait_for("weldmon/+/weld/result", 1, shift.size / RATE_HZ + 30)
        deadline = time.monotonic() + SERVED_WITHIN_S
        while True:
            try:
                served = healthz(port)[0]
                break
            except OSError:
                assert time.monotonic() < deadline, "/healthz never served again"
        code = daemon.stop()
    finally:
        if player is not None and player.poll() is None:
            player.kill()
            player.wait()
        daemon.kill()
    print(f"daemon before: {threads} threads, {fds} fds; with {IDLE} idle clients: {held}")
    assert code == 0, daemon.tail()
    assert "Too many open files" not in daemon.text()
    assert held[0] <= threads, "no thread per connection"
    assert held[1] <= fds + MAX_CONNECTIONS, "no descriptor beyond the cap"
    assert json.loads(results[0].payload)["n_windows"] >= 1
    assert served in (200, 503)
