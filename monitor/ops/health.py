"""``/metrics`` and ``/healthz`` over HTTP, for Prometheus and for whoever watches the line.

One small threaded WSGI server (standard library ``wsgiref``; no new dependency) runs on its
own thread, so it answers even while the event loop is busy and never blocks it:

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
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app
from pydantic import BaseModel, ConfigDict, Field

from deploy.errors import WeldmonError

DEFAULT_HOST = "127.0.0.1"  # loopback: metrics stay on the box unless the operator opens them
DEFAULT_PORT = 9108  # unassigned in Prometheus' default-port list; 9100 is node_exporter
DEFAULT_MAX_AUDIO_AGE_S = 5.0  # s without an audio block before the microphone counts as gone
DEFAULT_MAX_PENDING_WINDOW_AGE_S = 30.0  # s a window may wait for inference before it's stuck
# s the oldest unacknowledged event may wait: longer than the publisher's 60 s back-off cap,
# so one broker restart does not flap the check, short enough to page within minutes.
DEFAULT_MAX_OUTBOX_AGE_S = 180.0
DEFAULT_MAX_OUTBOX_DEPTH = 1000  # events: hours of welds; beyond it the broker is gone for long
SERVE_POLL_S = 0.2  # how quickly the server thread notices stop()
STOP_TIMEOUT_S = 5.0  # s to wait for the server thread after shutdown

log = structlog.get_logger(__name__)


class HealthServerError(WeldmonError):
    """The metrics/health server could not start (address in use, unknown host)."""


class HealthSettings(BaseModel):
    """The daemon's ``http:`` config section: where ``/metrics`` and ``/healthz`` listen and
    the limits ``/healthz`` judges by."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True
    host: str = Field(DEFAULT_HOST, min_length=1)  # IPv4/IPv6 address or name to bind
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)  # 0: any free port (tests)
    max_audio_age_s: float = Field(DEFAULT_MAX_AUDIO_AGE_S, gt=0.0)
    max_pending_window_age_s: float = Field(DEFAULT_MAX_PENDING_WINDOW_AGE_S, gt=0.0)
    max_outbox_age_s: float = Field(DEFAULT_MAX_OUTBOX_AGE_S, gt=0.0)
    max_outbox_depth: int = Field(DEFAULT_MAX_OUTBOX_DEPTH, ge=0)


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


def evaluate_health(snap: HealthSnapshot, settings: HealthSettings) -> HealthReport:
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
    settings: HealthSettings,
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


class _QuietHandler(WSGIRequestHandler):
    # wsgiref prints every request to stderr: a scrape every 15 s would flood the journal.
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_request", client=self.address_string(), request=format % args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client never holds up the daemon's exit


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class HealthServer:
    """The HTTP server on its own thread; `start` binds (errors surface there), `stop` ends it.

    Usable as a context manager. Both calls are quick; from async code call `stop` through
    ``asyncio.to_thread`` (it waits up to `SERVE_POLL_S` for the serving loop to notice).
    """

    def __init__(
        self,
        settings: HealthSettings,
        registry: CollectorRegistry,
        snapshot: Callable[[], HealthSnapshot],
    ) -> None:
        """Nothing listens until `start`."""
        self.settings = settings
        self._app = make_health_app(settings, registry, snapshot)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound; the port is the real one when settings asked for 0."""
        if self._server is None:
            raise HealthServerError("health server is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve on a background thread; raises HealthServerError if it cannot."""
        if self._server is not None:
            return
        host, port = self.settings.host, self.settings.port
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        try:
            server = make_server(host, port, self._app, server_class, _QuietHandler)
        except OSError as exc:
            raise HealthServerError(
                f"http: cannot listen on {host}:{port} ({exc.strerror or exc})"
            ) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SERVE_POLL_S},
            name="weldmon-http",
            daemon=True,
        )
        self._thread.start()
        log.info("http_listening", host=self.address[0], port=self.address[1])

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
