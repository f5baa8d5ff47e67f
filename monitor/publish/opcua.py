"""An OPC UA server inside `weldmon run`, for PLCs and SCADA that do not speak MQTT.

A side path: it is fed by the daemon's events exactly like the MQTT publisher (`__call__` is
an event listener) and runs its own asyncio loop on its own thread, so a client that floods
it, a failure to bind or a crash inside asyncua never holds up the pipeline or stops a
verdict. What it cannot do it logs and reports once through `on_failure`.

Namespace (``opcua.namespace_uri``, string NodeIds so a PLC program can hard-code them)::

    Objects/Weldmon                          DaemonVersion, ModelSha256
    Objects/Weldmon/<station>                NodeId "<station>"
        Verdict        String   none | good_weld | defect (latest result)
        Label          Int16    -1 none, 0 good_weld, 1 defect
        PDefect        Double   the latest result's pooled p_defect
        Threshold      Double   the threshold that judged it
        WeldId         String   the latest result's weld_id (as on MQTT)
        PartId         String   its part id, "" when none was announced
        ResultAt       DateTime when that weld ended (UTC)
        Alert          Boolean  latched by an early alert or a defect result
        WeldInProgress Boolean  from the weld's start to its result
        RollingPDefect Double   the weld in progress, after every judged window
        Health         String   ok | no_device | no_audio | dead_microphone | starting
        ResultCount    UInt32   results so far; written after everything else a result
                                changes, so a change means the values above are complete
        AcknowledgeAlert()      clears Alert (when opcua.acknowledge is true)

NodeIds are ``ns=<idx>;s=<station>.<Variable>`` (e.g. ``cell1.PDefect``). Security: none
(anonymous, unencrypted), as most cell networks run OPC UA; the server binds to loopback
unless ``opcua.host`` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import Node, Server, ua

from monitor.events import Event
from monitor.publish.opcua_state import OpcUaConfig, OpcUaState, Snapshot, StationValues

START_TIMEOUT_S = 30.0  # asyncua builds its address space in ~1 s; a loaded box is slower
STOP_TIMEOUT_S = 5.0
OPCUA_NULL_DATETIME = datetime(1601, 1, 1, tzinfo=UTC)  # OPC UA's "no time" (its epoch)

log = structlog.get_logger(__name__)

# Variable name -> (OPC UA type, how to read it off StationValues). ResultCount is last:
# writes go in this order, so everything a result changed (the verdict group, Alert,
# WeldInProgress) is written when a client sees ResultCount change.
_STATION_VARIABLES: dict[str, tuple[ua.VariantType, Callable[[StationValues], Any]]] = {
    "Verdict": (ua.VariantType.String, lambda v: v.verdict),
    "Label": (ua.VariantType.Int16, lambda v: v.label),
    "PDefect": (ua.VariantType.Double, lambda v: v.p_defect),
    "Threshold": (ua.VariantType.Double, lambda v: v.threshold),
    "WeldId": (ua.VariantType.String, lambda v: v.weld_id),
    "PartId": (ua.VariantType.String, lambda v: v.part_id),
    "ResultAt": (
        ua.VariantType.DateTime,
        lambda v: v.result_at or datetime(1601, 1, 1, tzinfo=UTC),
    ),
    "Alert": (ua.VariantType.Boolean, lambda v: v.alert),
    "WeldInProgress": (ua.VariantType.Boolean, lambda v: v.weld_in_progress),
    "RollingPDefect": (ua.VariantType.Double, lambda v: v.rolling_p_defect),
    "Health": (ua.VariantType.String, lambda v: v.health),
    "ResultCount": (ua.VariantType.UInt32, lambda v: v.result_count),
}


def _node_id(name: str, idx: int) -> ua.NodeId:
    """The string NodeId ``ns=<idx>;s=<name>``."""
    # asyncua annotates NodeId's fields with its wire types (ua.String, ua.Int16); at run time
    # it takes, and its own examples pass, a plain str and int.
    return ua.NodeId(name, idx)  # type: ignore[arg-type]


class OpcUaError(Exception):
    """The OPC UA server could not start (address in use, bad host)."""


class OpcUaServer:
    """The server on its own thread. `start` binds (and says why not), the instance is an
    event listener, `stop` ends it.

    Args:
        cfg: the ``opcua:`` section.
        stations: the station names, in channel order.
        health: station -> its health word; called on the server's thread every
            ``cfg.health_interval_s``, so it must only read.
        on_failure: called once, on the server's thread, when the running server fails.
    """

    def __init__(
        self,
        cfg: OpcUaConfig,
        stations: list[str],
        health: Callable[[str], str],
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.state = OpcUaState(stations, latch_until_acknowledged=cfg.acknowledge)
        self._health = health
        self._on_failure = on_failure
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._nodes: dict[str, Node] = {}
        self._written: dict[str, Any] = {}  # what each node holds now
        self._write_lock: asyncio.Lock | None = None
        self._started = threading.Event()
        self._stop_requested = threading.Event()  # stop() before the loop existed
        self._start_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="weldmon-opcua", daemon=True)
        self.acknowledged = 0  # alerts cleared by a client
        self.listener_failures = 0

    # -- the daemon's side ---------------------------------------------------------------------

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Build the namespace and listen; raises OpcUaError when it cannot."""
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise OpcUaError(f"opcua: server did not start within {timeout_s:g} s")
        if self._start_error is not None:
            raise OpcUaError(self._start_error)
        log.info("opcua_listening", endpoint=self.cfg.endpoint, security="none")

    def __call__(self, event: Event) -> None:
        """An event listener: take the event in, wake the server's writer. Never raises."""
        try:
            if self.state.apply(event):
                self._wake()
        except Exception as exc:  # a side path must not break the event router
            self.listener_failures += 1
            if self.listener_failures == 1:
                log.error("opcua_listener_failed", error=repr(exc))

    def stop(self) -> None:
        """Stop serving and wait for the thread (idempotent; call via asyncio.to_thread)."""
        self._stop_requested.set()  # first: _main reads it after publishing its loop
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)

    def _wake(self) -> None:
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(changed.set)

    # -- the server's thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # anything asyncua raises ends the side path, not the daemon
            message = str(exc) if isinstance(exc, OpcUaError) else f"opcua: server failed: {exc!r}"
            if not self._started.is_set():
                self._start_error = message
                self._started.set()
                return
            log.error("opcua_failed", error=repr(exc))
            if self._on_failure is not None:
                self._on_failure(message)

    async def _main(self) -> None:
        self._changed, self._stop = asyncio.Event(), asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()  # last: stop() and _wake() need the events
        if self._stop_requested.is_set():
            self._stop.set()
        # asyncua warns at every start that NoSecurity signs and encrypts nothing; that is
        # the documented configuration, said once in our own opcua_listening line instead.
        logging.getLogger("asyncua").setLevel(logging.ERROR)
        server = Server()
        await server.init()
        server.set_endpoint(self.cfg.endpoint)
        server.set_server_name("weldmon")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(self.cfg.namespace_uri)
        self._nodes = await self._build(server, idx)
        if self._stop.is_set():  # the daemon stopped while the namespace was built
            raise OpcUaError("opcua: stopped before it started")
        try:
            await server.start()
        except OSError as exc:
            raise OpcUaError(
                f"opcua: cannot listen on {self.cfg.host}:{self.cfg.port} ({exc.strerror or exc})"
            ) from exc
        try:
            self._started.set()
            await self._serve()
        finally:
            await server.stop()

    async def _build(self, server: Server, idx: int) -> dict[str, Node]:
        root = await server.nodes.objects.add_object(
            _node_id("Weldmon", idx), ua.QualifiedName("Weldmon", idx)
        )
        nodes: dict[str, Node] = {}
        for name in ("DaemonVersion", "ModelSha256"):
            nodes[name] = await root.add_variable(
                _node_id(name, idx), ua.QualifiedName(name, idx), "", ua.VariantType.String
            )
        empty = StationValues()
        for station in self.state.stations:
            obj = await root.add_object(_node_id(station, idx), ua.QualifiedName(station, idx))
            for var, (kind, read) in _STATION_VARIABLES.items():
                nodes[f"{station}.{var}"] = await obj.add_variable(
                    _node_id(f"{station}.{var}", idx),
                    ua.QualifiedName(var, idx),
                    ua.Variant(read(empty), kind),
                )
            if self.cfg.acknowledge:
                await obj.add_method(
                    _node_id(f"{station}.AcknowledgeAlert", idx),
                    ua.QualifiedName("AcknowledgeAlert", idx),
                    self._acknowledge_method(station),
                    [],
                    [],
                )
        return nodes

    def _acknowledge_method(self, station: str) -> Callable[..., Any]:
        async def acknowledge(parent: ua.NodeId) -> list[ua.Variant]:
            del parent
            if self.state.acknowledge(station):
                self.acknowledged += 1
                log.info("opcua_alert_acknowledged", station=station)
            await self._write()  # before the call returns: the caller reads Alert false next
            return []

        return acknowledge

    async def _serve(self) -> None:
        assert self._changed is not None and self._stop is not None
        next_health = 0.0
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            if loop.time() >= next_health:
                next_health = loop.time() + self.cfg.health_interval_s
                self._read_health()
            self._changed.clear()
            await self._write()
            wait = max(0.0, next_health - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await _first(self._changed.wait(), self._stop.wait())

    def _read_health(self) -> None:
        for station in self.state.stations:
            try:
                self.state.set_health(station, self._health(station))
            except Exception as exc:  # a broken probe shows as unknown, not as a crash
                self.state.set_health(station, "unknown")
                log.error("opcua_health_failed", station=station, error=repr(exc))

    async def _write(self) -> None:
        """Write every value that changed since the last write, in `_STATION_VARIABLES`
        order. One writer at a time, each from a fresh snapshot, so an older snapshot never
        overwrites a newer one."""
        assert self._write_lock is not None
        async with self._write_lock:
            await self._write_snapshot(self.state.snapshot())

    async def _write_snapshot(self, snap: Snapshot) -> None:
        values: dict[str, Any] = {
            "DaemonVersion": (snap.daemon_version, ua.VariantType.String),
            "ModelSha256": (snap.model_sha256, ua.VariantType.String),
        }
        for station, station_values in snap.stations.items():
            for var, (kind, read) in _STATION_VARIABLES.items():
                values[f"{station}.{var}"] = (read(station_values), kind)
        for key, (value, kind) in values.items():
            if self._written.get(key) != value:
                await self._nodes[key].write_value(ua.Variant(value, kind))
                self._written[key] = value


@contextlib.asynccontextmanager
async def serving(
    cfg: OpcUaConfig,
    stations: list[str],
    health: Callable[[str], str],
    report: Callable[[str, str], None],
) -> AsyncIterator[OpcUaServer]:
    """The OPC UA server for `stations` while the body runs (the caller feeds it events).
    It starts in the background, because asyncua builds its address space for seconds; a
    failure to start, or of the running server, is handed to ``report(code, message)`` on the
    event loop and never stops the body: verdicts matter more than one of their consumers."""
    loop = asyncio.get_running_loop()

    def failed(message: str) -> None:  # on the OPC UA thread
        loop.call_soon_threadsafe(report, "opcua_failed", message)

    server = OpcUaServer(cfg, stations, health, failed)

    async def start() -> None:
        try:
            await asyncio.to_thread(server.start)
        except OpcUaError as exc:
            log.error("opcua_unavailable", error=str(exc))
            report("opcua_unavailable", str(exc))

    starting = loop.create_task(start(), name="weldmon-opcua-start")
    try:
        yield server
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await asyncio.to_thread(server.stop)


async def _first(*aws: Any) -> None:
    """Return when the first awaitable completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
