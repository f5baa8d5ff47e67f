"""The console's MQTT loop: subscribe under every ``--prefix``, keep the live state and the
history, and tell the web layer what changed.

The live state and its rules, the topic routing and the reconnecting connection are the
live-view core's (``monitor.live``), the same as `weldmon watch`'s; this module adds the
history, the shadow verdicts and the teach-in replies. By default it is a persistent session
(a fixed client id, ``clean_session=False``, QoS 1), so the broker queues results and alerts
while the console restarts and the history has no holes.

Nothing a message carries can stop the loop: a payload that is not a weldmon message, an
event whose station contradicts its topic, a history write that fails, are each counted and
shown, and the loop goes on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from monitor.console.fleet import Fleet
from monitor.console.shadow_store import add_shadow
from monitor.console.store import ConsoleDb, WeldStore
from monitor.events import ErrorEvent, MalformedMessageError, WeldAlert, WeldResult
from monitor.events.shadow import parse_shadow_result
from monitor.events.teach import TeachReply, parse_teach_reply
from monitor.live.feed import BrokerOptions, follow
from monitor.live.messages import apply_message
from monitor.live.state import Change, ConnectionState
from monitor.live.topics import PrefixPattern, Route, classify

log = structlog.get_logger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
        self._rng = rng

    async def run(self) -> None:
        """Follow every pattern with the live core's reconnecting feed until cancelled."""
        await follow(
            self.options,
            [pattern.subscription for pattern in self.patterns],
            self._link,
            self.handle,
            self._rng,
        )

    def _link(self, state: ConnectionState, retry_in_s: float | None, error: str | None) -> None:
        self.on_change(
            self.fleet.set_connection(state, _utc_now(), retry_in_s=retry_in_s, error=error)
        )

    async def handle(self, topic: str, payload: bytes) -> None:
        """Apply one message (never raises for anything the message carries)."""
        self.counters.messages += 1
        self.fleet.messages += 1
        route = classify(self.patterns, topic)
        if route is None or route.kind == "ignored":
            return
        if route.kind == "shadow":
            await self._shadow(route, topic, payload)
            return
        if route.kind == "teach":
            self._teach(route, topic, payload)
            return
        applied = apply_message(self.fleet, route, topic, payload, _utc_now())
        if applied.duplicate:
            self.counters.duplicates += 1
        event = applied.event
        if event is not None:
            self.counters.by_kind[event.kind] = self.counters.by_kind.get(event.kind, 0) + 1
        if isinstance(event, ErrorEvent):
            await self._store(WeldStore.add_error, route.prefix, event)
        elif isinstance(event, WeldResult) and applied.facts is not None:
            self.counters.results += 1
            if event.teach_in and event.teach_in_run:
                self._teach_weld(route.prefix, event)
            facts = applied.facts
            await self._store(
                WeldStore.add_result, route.prefix, event, _utc_now(), facts.alerted, facts.window_s
            )
        elif isinstance(event, WeldAlert):
            await self._store(WeldStore.add_alert, route.prefix, event)
        if applied.change is not None:
            self.on_change(applied.change)

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

    async def _store(self, method: Callable[..., object], *args: object) -> None:
        try:
            await self.db.call(method, *args)
        except Exception as exc:  # a full disk must not stop the live view
            self.counters.store_errors += 1
            self.counters.last_store_error = str(exc)[:300]
            log.error("console_store_failed", error=str(exc))
            self.on_change(Change("header"))
