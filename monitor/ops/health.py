"""``/metrics`` and ``/healthz`` over HTTP, for Prometheus and for whoever watches the line.

One bounded WSGI server (waitress: fixed threads, a connection cap, request timeouts; see
`HealthServer`) runs on its own threads, so it answers even while the event loop is busy,
never blocks it, and cannot take descriptors or threads from capture, MQTT or reload:

* ``/metrics``: prometheus_client's exposition of the daemon's `Metrics` registry.
* ``/healthz``: 200 ``{"status": "ok", ...}`` when the model is loaded, audio flows,
  inference keeps up and the outbox drains; otherwise 503 ``{"status": "unhealthy",
  "reasons": [...]}``. The verdict is `evaluate_health`, a pure function of a
  `HealthSnapshot` that the daemon hands over through a callable.

The snapshot callable runs on the server's thread: it must only read (a few attributes, a
queue size) and return quickly. If it raises, ``/healthz`` answers 503 naming the error.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import structlog
import waitress
from prometheus_client import CollectorRegistry, make_wsgi_app
from pydantic import Field
from waitress import wasyncore

from deploy.errors import WeldmonError
from deploy.strict_model import StrictModel

DEFAULT_HOST = "127.0.0.1"  # loopback: metrics stay on the box unless the operator opens them
DEFAULT_PORT = 9108  # unassigned in Prometheus' default-port list; 9100 is node_exporter
DEFAULT_MAX_AUDIO_AGE_S = 5.0  # s without an audio block before the microphone counts as gone
DEFAULT_MAX_PENDING_WINDOW_AGE_S = 30.0  # s a window may wait for inference before it's stuck
# s the oldest unacknowledged event may wait: longer than the publisher's 60 s back-off cap,
# so one broker restart does not flap the check, short enough to page within minutes.
DEFAULT_MAX_OUTBOX_AGE_S = 180.0
DEFAULT_MAX_OUTBOX_DEPTH = 1000  # events: hours of welds; beyond it the broker is gone for long
DEFAULT_MAX_CONNECTIONS = 8  # a scraper, a health probe and a few people with curl
DEFAULT_REQUEST_TIMEOUT_S = 10.0  # idle or half-sent longer than this: closed
HTTP_THREADS = 2  # request workers; requests take milliseconds (a registry dump, a snapshot)
WAITRESS_OWN_SOCKETS = 2  # its listening socket and wake-up pipe count toward its limit
CLEANUP_INTERVAL_S = 1  # how often waitress looks for timed-out connections
STOP_TIMEOUT_S = 5.0  # s to wait for the server thread after shutdown

log = structlog.get_logger(__name__)


class HealthServerError(WeldmonError):
    """The metrics/health server could not start (address in use, unknown host)."""


class HttpConfig(StrictModel):
    """The daemon's ``http:`` config section: where ``/metrics`` and ``/healthz`` listen and
    the limits ``/healthz`` judges by."""

    enabled: bool = True
    host: str = Field(DEFAULT_HOST, min_length=1)  # IPv4/IPv6 address or name to bind
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)  # 0: any free port (tests)
    max_audio_age_s: float = Field(DEFAULT_MAX_AUDIO_AGE_S, gt=0.0)
    max_pending_window_age_s: float = Field(DEFAULT_MAX_PENDING_WINDOW_AGE_S, gt=0.0)
    max_outbox_age_s: float = Field(DEFAULT_MAX_OUTBOX_AGE_S, gt=0.0)
    max_outbox_depth: int = Field(DEFAULT_MAX_OUTBOX_DEPTH, ge=0)
    # connections served at once; more wait in the kernel's listen queue (no descriptor)
    max_connections: int = Field(DEFAULT_MAX_CONNECTIONS, ge=1, le=256)
    # a connection idle, or a request half-sent, this long is closed
    request_timeout_s: float = Field(DEFAULT_REQUEST_TIMEOUT_S, gt=0.0, le=300.0)


@dataclass(frozen=True)
class HealthSnapshot:
    """What the daemon knows at one moment; ages in seconds, None when there is no such thing."""

    model_loaded: bool
    audio_age_s: float | None  # since the last audio block; None: no block yet
    pending_window_age_s: float | None  # oldest window awaiting inference; None: none waits
    mqtt_enabled: bool
    mqtt_connected: bool
    outbox_depth: int  # events stored, not yet acknowledged by the broker
    outbox_oldest_age_s: float | None  # the oldest of those; None: the outbox is empty
    # Outbox writes failing for this long (events held in memory); None: writes work.
    outbox_failing_s: float | None = None
    outbox_error: str | None = None  # why the last write failed
    outbox_held: int = 0  # events held in memory meanwhile


@dataclass(frozen=True)
class HealthReport:
    """The verdict on one snapshot: ``ok`` with no reasons, or the reasons it is not."""

    ok: bool
    reasons: tuple[str, ...]
    snapshot: HealthSnapshot | None

    def body(self) -> dict[str, Any]:
        """The JSON document ``/healthz`` answers with."""
        out: dict[str, Any] = {"status": "ok" if self.ok else "unhealthy"}
        if self.reasons:
            out["reasons"] = list(self.reasons)
        if self.snapshot is not None:
            out["checks"] = asdict(self.snapshot)
        return out


def evaluate_health(snap: HealthSnapshot, settings: HttpConfig) -> HealthReport:
    """Judge `snap` against the limits in `settings` (pure)."""
    reasons = []
    if not snap.model_loaded:
        reasons.append("model not loaded")
    if snap.audio_age_s is None:
        reasons.append("no audio received yet")
    elif snap.audio_age_s > settings.max_audio_age_s:
        reasons.append(
            f"no audio for {snap.audio_age_s:.1f} s (limit {settings.max_audio_age_s:g} s)"
        )
    if (
        snap.pending_window_age_s is not None
        and snap.pending_window_age_s > settings.max_pending_window_age_s
    ):
        reasons.append(
            f"inference behind: a window waits {snap.pending_window_age_s:.1f} s "
            f"(limit {settings.max_pending_window_age_s:g} s)"
        )
    if snap.mqtt_enabled and snap.outbox_failing_s is not None:
        reasons.append(
            f"outbox cannot be written for {snap.outbox_failing_s:.0f} s ({snap.outbox_error}); "
            f"{snap.outbox_held} events held in memory"
        )
    if snap.mqtt_enabled:
        state = "connected" if snap.mqtt_connected else "disconnected"
        if snap.outbox_depth > settings.max_outbox_depth:
            reasons.append(
                f"outbox holds {snap.outbox_depth} events (limit {settings.max_outbox_depth}), "
                f"broker {state}"
            )
        if (
            snap.outbox_oldest_age_s is not None
            and snap.outbox_oldest_age_s > settings.max_outbox_age_s
        ):
            reasons.append(
                f"outbox not draining: oldest event waits {snap.outbox_oldest_age_s:.0f} s "
                f"(limit {settings.max_outbox_age_s:g} s), broker {state}"
            )
    return HealthReport(ok=not reasons, reasons=tuple(reasons), snapshot=snap)


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_health_app(
    settings: HttpConfig,
    registry: CollectorRegistry,
    snapshot: Callable[[], HealthSnapshot],
) -> WsgiApp:
    """A WSGI app serving ``/metrics`` from `registry` and ``/healthz`` from `snapshot`."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path != "/healthz":
            return _json(start_response, "404 Not Found", {"error": f"no such path {path}"})
        try:
            report = evaluate_health(snapshot(), settings)
        except Exception as exc:  # any failure of the daemon's probe is itself unhealthy
            log.error("health_probe_failed", error=repr(exc))
            report = HealthReport(False, (f"health probe failed: {exc!r}",), None)
        status = "200 OK" if report.ok else "503 Service Unavailable"
        return _json(start_response, status, report.body())

    return app


def _json(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


class HealthServer:
    """The HTTP server on its own threads; `start` binds (errors surface there), `stop` ends it.

    Waitress (a maintained pure-Python WSGI server) rather than the standard library's
    threading server, which opened one thread and one file descriptor per connection with no
    timeout and no cap: 400 idle half-sent requests held 411 threads and 419 fds, and with
    ``nofile`` at 64 they starved MQTT reconnects and reloads. Here one thread multiplexes
    every connection with poll() and `HTTP_THREADS` workers run requests, so threads are
    fixed; at most `max_connections` are accepted at once (more wait in the kernel's listen
    queue, which costs the process no descriptor); a connection idle (or a request
    half-sent) for `request_timeout_s` is closed. Exhausting it only delays scrapes.

    Usable as a context manager. Both calls are quick; from async code call `stop` through
    ``asyncio.to_thread`` (it waits up to `STOP_TIMEOUT_S` for the serving thread).
    """

    def __init__(
        self,
        settings: HttpConfig,
        registry: CollectorRegistry,
        snapshot: Callable[[], HealthSnapshot],
    ) -> None:
        """Nothing listens until `start`."""
        self.settings = settings
        self._app = make_health_app(settings, registry, snapshot)
        self._server: Any = None  # waitress' server (its types are not exported)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound; the port is the real one when settings asked for 0."""
        if self._server is None:
            raise HealthServerError("health server is not running")
        return str(self._server.effective_host), int(self._server.effective_port)

    def start(self) -> None:
        """Bind and serve on background threads; raises HealthServerError if it cannot."""
        if self._server is not None:
            return
        s = self.settings
        sock = _bind(s.host, s.port)
        try:
            server = waitress.create_server(
                self._app,
                sockets=[sock],
                threads=HTTP_THREADS,
                # waitress counts its listening socket and its wake-up pipe as connections
                connection_limit=s.max_connections + WAITRESS_OWN_SOCKETS,
                backlog=s.max_connections,
                channel_timeout=math.ceil(s.request_timeout_s),
                cleanup_interval=CLEANUP_INTERVAL_S,
                asyncore_use_poll=True,  # select() fails on descriptors above 1023
                ident="weldmon",
                clear_untrusted_proxy_headers=False,
            )
        except Exception:
            sock.close()
            raise
        self._server = server
        self._thread = threading.Thread(target=server.run, name="weldmon-http", daemon=True)
        self._thread.start()
        log.info(
            "http_listening",
            host=self.address[0],
            port=self.address[1],
            max_connections=s.max_connections,
            request_timeout_s=s.request_timeout_s,
        )

    def stop(self) -> None:
        """Stop serving and close every socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        # Close the sockets on the serving thread itself (its poll loop owns them); the loop
        # ends once its map is empty.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map, ignore_all=True))
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
        server.task_dispatcher.shutdown(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), the first address `host` resolves to. Bound here,
    not inside waitress, so a failure closes it and names the reason."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise HealthServerError(
            f"http: cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise HealthServerError(
            f"http: cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from exc
    return sock
