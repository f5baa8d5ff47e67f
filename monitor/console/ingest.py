"""The console's MQTT loop: subscribe under every ``--prefix``, keep the live state and the
history, and tell the web layer what changed.

One connection, reconnecting with capped, jittered back-off like `weldmon watch`. By default
it is a persistent session (a fixed client id, ``clean_session=False``, QoS 1), so the broker
queues results and alerts while the console restarts and the history has no holes.

Nothing a message carries can stop the loop: a payload that is not a weldmon message, an
event whose station contradicts its topic, a history write that fails, are each counted and
shown, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiomqtt
import structlog

from monitor.backoff import backoff_delay
from monitor.console.fleet import Change, Fleet
from monitor.console.shadow_store import add_shadow
from monitor.console.store import ConsoleDb, WeldStore
from monitor.console.topics import PrefixPattern, Route, classify
from monitor.events import (
    ErrorEvent,
    MalformedMessageError,
    WeldAlert,
    WeldResult,
    parse_event,
    parse_status,
)
from monitor.events.shadow import parse_shadow_result
from monitor.events.teach import TeachReply, parse_teach_reply

RECONNECT_MIN_S = 0.5  # a broker restart takes about a second
RECONNECT_MAX_S = 10.0  # an operator's page should come back within seconds
KEEPALIVE_S = 10  # a silently dead link shows as disconnected within ~15 s
CONNECT_TIMEOUT_S = 5.0
SUBSCRIBE_QOS = 1  # results and alerts must not be lost between broker and console
_KIND_OF_TOPIC = {
    "start": "weld_start",
    "progress": "weld_progress",
    "alert": "weld_alert",
    "result": "weld_result",
}

log = structlog.get_logger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BrokerOptions:
    """Where and how to connect."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls_context: ssl.SSLContext | None = None
    client_id: str | None = None  # None: a random id and a clean session

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class IngestCounters:
    messages: int = 0
    results: int = 0
    duplicates: int = 0
    store_errors: int = 0
    last_store_error: str | None = None
    by_kind: dict[str, int] = field(default_factory=dict)


TEACH_RUNS_KEPT = 256  # teach-in runs whose welds the console remembers (memory bound)
TEACH_WELDS_KEPT = 1000  # welds per run


class Ingest:
    """Feeds :class:`Fleet` and the history from the broker; ``run()`` reconnects until
    cancelled. ``on_change`` is called on the event loop after every visible change."""

    def __init__(
        self,
        options: BrokerOptions,
        patterns: list[PrefixPattern],
        fleet: Fleet,
        db: ConsoleDb,
        on_change: Callable[[Change], None],
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.patterns = patterns
        self.fleet = fleet
        self.db = db
        self.on_change = on_change
        self.counters = IngestCounters()
        # (daemon prefix, station) -> the daemon's latest teach-in reply (console /teach)
        self.teach: dict[tuple[str, str], TeachReply] = {}
        # (daemon prefix, station, teach-in run) -> its welds' ids as their results arrived
        self.teach_welds: dict[tuple[str, str, str], list[str]] = {}
        self._rng = rng or random.Random()
        self._failures = 0

    async def run(self) -> None:
        o = self.options
        while True:
            self.on_change(self.fleet.set_connection("connecting", _utc_now()))
            try:
                async with aiomqtt.Client(
                    o.host,
                    o.port,
                    identifier=o.client_id,
                    clean_session=o.client_id is None,
                    username=o.username,
                    password=o.password,
                    keepalive=KEEPALIVE_S,
                    timeout=CONNECT_TIMEOUT_S,
                    tls_context=o.tls_context,
                ) as client:
                    for pattern in self.patterns:
                        await client.subscribe(pattern.subscription, qos=SUBSCRIBE_QOS)
                    self._failures = 0
                    self.on_change(self.fleet.set_connection("connected", _utc_now()))
                    async for message in client.messages:
                        payload = message.payload
                        # paho hands over bytes; aiomqtt's type also allows str/number/None.
                        data = payload if isinstance(payload, bytes) else str(payload).encode()
                        await self.handle(message.topic.value, data)
            except aiomqtt.MqttError as exc:
                delay = backoff_delay(self._failures, RECONNECT_MIN_S, RECONNECT_MAX_S, self._rng)
                self._failures += 1
                self.on_change(
                    self.fleet.set_connection(
                        "disconnected", _utc_now(), retry_in_s=delay, error=str(exc)
                    )
                )
                await asyncio.sleep(delay)

    async def handle(self, topic: str, payload: bytes) -> None:
        """Apply one message (never raises for anything the message carries)."""
        self.counters.messages += 1
        self.fleet.messages += 1
        route = classify(self.patterns, topic)
        if route is None or route.kind == "ignored":
            return
        if route.kind == "status":
            self._status(route, payload)
            return
        if route.kind == "shadow":
            await self._shadow(route, topic, payload)
            return
        if route.kind == "teach":
            self._teach(route, topic, payload)
            return
        try:
            event = parse_event(payload)
        except MalformedMessageError as exc:
            self.on_change(self.fleet.bad_message(route.prefix, f"{topic}: {exc}"))
            return
        if route.kind == "error" and not isinstance(event, ErrorEvent):
            self.on_change(self.fleet.bad_message(route.prefix, f"{topic}: not an error event"))
            return
        if route.kind == "weld" and (
            isinstance(event, ErrorEvent)
            or event.station != route.station
            or event.kind != _KIND_OF_TOPIC[topic.rsplit("/", 1)[1]]
        ):
            self.on_change(
                self.fleet.bad_message(route.prefix, f"{topic}: event does not match its topic")
            )
            return
        if not self.fleet.is_new(event.event_id):
            self.counters.duplicates += 1
            return
        self.counters.by_kind[event.kind] = self.counters.by_kind.get(event.kind, 0) + 1
        if isinstance(event, ErrorEvent):
            await self._store(WeldStore.add_error, route.prefix, event)
            self.on_change(self.fleet.apply_error(route.prefix, event))
            return
        change, facts = self.fleet.apply_weld(route.prefix, event)
        if isinstance(event, WeldResult):
            self.counters.results += 1
            if event.teach_in and event.teach_in_run:
                self._teach_weld(route.prefix, event)
            await self._store(
                WeldStore.add_result, route.prefix, event, _utc_now(), facts.alerted, facts.window_s
            )
        elif isinstance(event, WeldAlert):
            await self._store(WeldStore.add_alert, route.prefix, event)
        if change is not None:
            self.on_change(change)

    async def _shadow(self, route: Route, topic: str, payload: bytes) -> None:
        """A shadow model's verdict: kept beside the production result for `/compare`."""
        try:
            shadow = parse_shadow_result(payload)
        except MalformedMessageError as exc:
            self.on_change(self.fleet.bad_message(route.prefix, f"{topic}: {exc}"))
            return
        if shadow.station != route.station:
            self.on_change(
                self.fleet.bad_message(route.prefix, f"{topic}: event does not match its topic")
            )
            return
        self.counters.by_kind[shadow.kind] = self.counters.by_kind.get(shadow.kind, 0) + 1
        await self._store(add_shadow, route.prefix, shadow, _utc_now())

    def _teach(self, route: Route, topic: str, payload: bytes) -> None:
        """A daemon's teach-in reply: the station's latest state for `/teach`."""
        try:
            reply = parse_teach_reply(payload)
        except MalformedMessageError as exc:
            self.on_change(self.fleet.bad_message(route.prefix, f"{topic}: {exc}"))
            return
        self.counters.by_kind[reply.kind] = self.counters.by_kind.get(reply.kind, 0) + 1
        self.teach[(route.prefix, reply.station)] = reply

    def _teach_weld(self, prefix: str, event: WeldResult) -> None:
        """A weld of a running teach-in: listed on `/teach` before the daemon's next reply."""
        key = (prefix, event.station, str(event.teach_in_run))
        if key not in self.teach_welds and len(self.teach_welds) >= TEACH_RUNS_KEPT:
            del self.teach_welds[next(iter(self.teach_welds))]  # the oldest run seen
        welds = self.teach_welds.setdefault(key, [])
        if len(welds) < TEACH_WELDS_KEPT:
            welds.append(event.weld_id)

    def _status(self, route: Route, payload: bytes) -> None:
        if not payload:  # a cleared retained status: no daemon announces itself there
            self.on_change(self.fleet.apply_status(route.prefix, None))
            return
        try:
            status = parse_status(payload)
        except MalformedMessageError as exc:
            self.on_change(self.fleet.bad_message(route.prefix, f"{route.prefix}/status: {exc}"))
            return
        self.on_change(self.fleet.apply_status(route.prefix, status))

    async def _store(self, method: Callable[..., object], *args: object) -> None:
        try:
            await self.db.call(method, *args)
        except Exception as exc:  # a full disk must not stop the live view
            self.counters.store_errors += 1
            self.counters.last_store_error = str(exc)[:300]
            log.error("console_store_failed", error=str(exc))
            self.on_change(Change("header"))
