"""What `weldmon watch` knows: one daemon prefix of the live-view core (``monitor.live``), as
the terminal shows it.

The rules (deduplication, a weld opened by progress alone, late messages of a finished weld
ignored, malformed messages counted) are the core's, shared with the console; this module
only narrows the core to the one prefix the watcher follows. No I/O and no clock (callers
pass ``now``): the MQTT loop in ``monitor.watch.app`` feeds messages in;
``monitor.watch.view`` draws the state. Each ``apply_*`` updates the state in place and
returns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from monitor.events import ErrorEvent, Event, StatusMessage
from monitor.live.messages import apply_event as _apply_event
from monitor.live.messages import apply_message as _apply_message
from monitor.live.state import (
    DEFAULT_HISTORY,
    Connection,
    ConnectionState,
    CurrentWeld,
    LiveState,
    StationLive,
    Verdict,
)
from monitor.live.topics import PrefixPattern, classify, parse_prefix

__all__ = [
    "DEFAULT_HISTORY",
    "CurrentWeld",
    "StationLive",
    "Verdict",
    "WatchState",
    "apply_connection",
    "apply_event",
    "apply_message",
    "initial_state",
]

MAX_ERRORS_SHOWN = 3  # daemon error events on the screen


@dataclass
class WatchState:
    """The live core narrowed to the watcher's prefix."""

    live: LiveState[StationLive]
    pattern: PrefixPattern

    @property
    def prefix(self) -> str:
        return self.pattern.text

    @property
    def history(self) -> int:
        return self.live.history

    @property
    def connection(self) -> Connection:
        return self.live.connection

    @property
    def status(self) -> StatusMessage | None:
        group = self.live.groups.get(self.prefix)
        return group.status if group is not None else None

    @property
    def stations(self) -> Mapping[str, StationLive]:
        group = self.live.groups.get(self.prefix)
        return group.stations if group is not None else {}

    @property
    def errors(self) -> tuple[ErrorEvent, ...]:
        """The daemon's newest error events, newest first."""
        group = self.live.groups.get(self.prefix)
        return tuple(group.errors)[:MAX_ERRORS_SHOWN] if group is not None else ()

    @property
    def malformed(self) -> int:
        """Messages under the prefix that were not weldmon events."""
        return self.live.malformed


def initial_state(prefix: str, broker: str, history: int = DEFAULT_HISTORY) -> WatchState:
    """The state before anything arrived (``prefix``: a plain topic, already validated)."""
    return WatchState(LiveState(broker, StationLive, history), parse_prefix(prefix))


def apply_connection(
    state: WatchState,
    conn_state: ConnectionState,
    now: datetime,
    *,
    retry_in_s: float | None = None,
    error: str | None = None,
) -> WatchState:
    """Record a change of the watcher's own connection."""
    state.live.set_connection(conn_state, now, retry_in_s=retry_in_s, error=error)
    return state


def apply_message(state: WatchState, topic: str, payload: bytes, now: datetime) -> WatchState:
    """Apply one MQTT message under the prefix."""
    route = classify([state.pattern], topic)
    if route is not None:
        _apply_message(state.live, route, topic, payload, now)
    return state


def apply_event(state: WatchState, event: Event, now: datetime) -> WatchState:
    """Apply one parsed event of the watched daemon (deduplicated on ``event_id``)."""
    _apply_event(state.live, state.prefix, event, now)
    return state
