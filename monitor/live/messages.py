"""One MQTT message into the live state: parse it by its route, check it against its topic,
drop redeliveries, apply it.

Pure apart from the state it is given; never raises for anything a message carries (a bad
payload is counted by :meth:`LiveState.bad_message`). Routes other than status, error and
weld (shadow verdicts, teach-in replies, inbound commands) are the views' own business and
change nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from monitor.events import (
    ErrorEvent,
    Event,
    MalformedMessageError,
    parse_event,
    parse_status,
)
from monitor.live.state import Change, LiveState, ResultFacts, StationT
from monitor.live.topics import Route

# The last topic level of a weld event -> the event kind it must carry.
KIND_OF_TOPIC = {
    "start": "weld_start",
    "progress": "weld_progress",
    "alert": "weld_alert",
    "result": "weld_result",
}


@dataclass(frozen=True)
class Applied:
    """What one message did: the change to redraw (None: nothing visible), the event when
    it was new and applied, what the state knew of a result's weld, and whether the event
    was a redelivery."""

    change: Change | None = None
    event: Event | None = None
    facts: ResultFacts | None = None
    duplicate: bool = False


def apply_message(
    state: LiveState[StationT], route: Route, topic: str, payload: bytes, now: datetime
) -> Applied:
    """Apply one message routed by :func:`monitor.live.topics.classify`."""
    if route.kind == "status":
        if not payload:  # a cleared retained status: no daemon announces itself there
            return Applied(state.apply_status(route.prefix, None))
        try:
            status = parse_status(payload)
        except MalformedMessageError as exc:
            return Applied(state.bad_message(route.prefix, f"{route.prefix}/status: {exc}"))
        return Applied(state.apply_status(route.prefix, status))
    if route.kind not in ("error", "weld"):
        return Applied()
    try:
        event = parse_event(payload)
    except MalformedMessageError as exc:
        return Applied(state.bad_message(route.prefix, f"{topic}: {exc}"))
    if route.kind == "error" and not isinstance(event, ErrorEvent):
        return Applied(state.bad_message(route.prefix, f"{topic}: not an error event"))
    if route.kind == "weld" and (
        isinstance(event, ErrorEvent)
        or event.station != route.station
        or event.kind != KIND_OF_TOPIC[topic.rsplit("/", 1)[1]]
    ):
        return Applied(state.bad_message(route.prefix, f"{topic}: event does not match its topic"))
    return apply_event(state, route.prefix, event, now)


def apply_event(state: LiveState[StationT], prefix: str, event: Event, now: datetime) -> Applied:
    """Apply one parsed event of the daemon at ``prefix`` (deduplicated on ``event_id``)."""
    if not state.is_new(event.event_id):
        return Applied(duplicate=True)
    if isinstance(event, ErrorEvent):
        return Applied(state.apply_error(prefix, event), event)
    change, facts = state.apply_weld(prefix, event, now)
    return Applied(change, event, facts)
