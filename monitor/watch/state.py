"""What `weldmon watch` knows, as immutable values: apply one message -> a new state.

Pure: no I/O, no clock (callers pass ``now``), so every rule is a unit test. The MQTT loop
in ``monitor.watch.app`` feeds messages in; ``monitor.watch.view`` draws the state.

Rules worth knowing:
- Delivery is at-least-once, so events are deduplicated on ``event_id`` (the last
  :data:`DEDUPE_WINDOW` ids are remembered).
- A watcher started mid-weld sees progress before (or without) a start: progress alone
  opens the current weld.
- Progress and result travel on different topics at different QoS and may arrive out of
  order: anything for a weld that already has a verdict is ignored.
- Messages that are not weldmon events are counted, never fatal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from monitor.events import (
    ErrorEvent,
    Event,
    MalformedMessageError,
    StatusMessage,
    WeldAlert,
    WeldProgress,
    WeldResult,
    WeldStart,
    parse_event,
    parse_status,
    status_topic,
)
from monitor.events.shadow import model_change_topic

DEFAULT_HISTORY = 5  # verdicts shown per station: fits a 40-line terminal with 3 stations
DEDUPE_WINDOW = 512  # event ids remembered: far more than arrive during one reconnect
MAX_ERRORS_SHOWN = 3  # daemon error events kept for the screen

ConnectionState = Literal["connecting", "connected", "disconnected"]


@dataclass(frozen=True)
class CurrentWeld:
    """The weld going on at a station, as the last progress (or start) described it."""

    weld_id: str
    started_at: datetime
    received_at: datetime  # the watcher's clock when the last message about it arrived
    threshold: float
    p_defect: float | None = None  # rolling top-k pool; None until the first window
    n_windows: int = 0
    elapsed_s: float = 0.0  # from the daemon's sample clock, at the last progress
    alerted: bool = False
    replay: bool = False  # its events came from `weldmon replay --publish`, not a live weld


@dataclass(frozen=True)
class Verdict:
    """One finished weld."""

    weld_id: str
    ended_at: datetime
    label_name: str
    p_defect: float
    threshold: float
    duration_s: float
    alerted: bool
    degraded_reasons: tuple[str, ...] = ()
    confidence: str | None = None  # "high" | "low"; None: the model has no calibration
    replay: bool = False  # published by `weldmon replay --publish` from a recording


@dataclass(frozen=True)
class StationView:
    """Everything shown for one station."""

    name: str
    current: CurrentWeld | None = None
    verdicts: tuple[Verdict, ...] = ()  # newest first, at most `history`
    welds: int = 0
    defects: int = 0
    alerts: int = 0


@dataclass(frozen=True)
class Connection:
    """The watcher's own link to the broker."""

    broker: str
    state: ConnectionState = "connecting"
    since: datetime | None = None
    attempts: int = 0  # failed attempts since the last success
    retry_in_s: float | None = None  # back-off before the next attempt (while disconnected)
    last_error: str | None = None


@dataclass(frozen=True)
class WatchState:
    """The whole view: daemon status, every station seen, the watcher's connection."""

    prefix: str
    connection: Connection
    history: int = DEFAULT_HISTORY
    status: StatusMessage | None = None
    stations: Mapping[str, StationView] = field(default_factory=dict)
    errors: tuple[ErrorEvent, ...] = ()  # newest first
    malformed: int = 0  # messages under the prefix that were not weldmon events
    seen_ids: tuple[str, ...] = ()  # recent event ids, oldest first


def initial_state(prefix: str, broker: str, history: int = DEFAULT_HISTORY) -> WatchState:
    """The state before anything arrived."""
    return WatchState(prefix=prefix, connection=Connection(broker=broker), history=history)


def apply_connection(
    state: WatchState,
    conn_state: ConnectionState,
    now: datetime,
    *,
    retry_in_s: float | None = None,
    error: str | None = None,
) -> WatchState:
    """Record a change of the watcher's own connection."""
    old = state.connection
    attempts = 0 if conn_state == "connected" else old.attempts + (conn_state == "disconnected")
    return replace(
        state,
        connection=replace(
            old,
            state=conn_state,
            since=now,
            attempts=attempts,
            retry_in_s=retry_in_s if conn_state == "disconnected" else None,
            last_error=error if error is not None else old.last_error,
        ),
    )


SHADOW_SUFFIX = "/shadow/result"


def apply_message(state: WatchState, topic: str, payload: bytes, now: datetime) -> WatchState:
    """Apply one MQTT message under the prefix; returns the new state."""
    if topic == status_topic(state.prefix):
        if not payload:  # a cleared retained status: no daemon has announced itself
            return replace(state, status=None)
        try:
            return replace(state, status=parse_status(payload))
        except MalformedMessageError:
            return replace(state, malformed=state.malformed + 1)
    if topic.endswith("/trigger") or "/cmd/" in topic:
        return state  # inbound commands to the daemon, not events
    if topic.endswith(SHADOW_SUFFIX) or topic == model_change_topic(state.prefix):
        return state  # a shadow model's verdicts and model changes: not weld events
    try:
        event = parse_event(payload)
    except MalformedMessageError:
        return replace(state, malformed=state.malformed + 1)
    return apply_event(state, event, now)


def apply_event(state: WatchState, event: Event, now: datetime) -> WatchState:
    """Apply one parsed event (deduplicated on ``event_id``)."""
    if event.event_id in state.seen_ids:
        return state
    state = replace(state, seen_ids=(*state.seen_ids, event.event_id)[-DEDUPE_WINDOW:])
    if isinstance(event, ErrorEvent):
        return replace(state, errors=(event, *state.errors)[:MAX_ERRORS_SHOWN])
    station = state.stations.get(event.station, StationView(name=event.station))
    if any(v.weld_id == event.weld_id for v in station.verdicts) and not isinstance(
        event, WeldResult
    ):
        return state  # late progress/alert of a finished weld
    new = _apply_weld_event(station, event, now, state.history)
    return replace(state, stations={**state.stations, event.station: new})


def _apply_weld_event(
    station: StationView,
    event: WeldStart | WeldProgress | WeldAlert | WeldResult,
    now: datetime,
    history: int,
) -> StationView:
    current = station.current
    same = current is not None and current.weld_id == event.weld_id
    if isinstance(event, WeldStart):
        return replace(
            station,
            current=CurrentWeld(
                event.weld_id, event.started_at, now, event.threshold, replay=event.replay
            ),
        )
    if isinstance(event, WeldProgress):
        base = (
            current
            if same and current is not None
            else CurrentWeld(
                event.weld_id, event.emitted_at, now, event.threshold, replay=event.replay
            )
        )
        return replace(
            station,
            current=replace(
                base,
                received_at=now,
                threshold=event.threshold,
                p_defect=event.p_defect,
                n_windows=event.n_windows,
                elapsed_s=event.elapsed_s,
            ),
        )
    if isinstance(event, WeldAlert):
        base = (
            current
            if same and current is not None
            else CurrentWeld(
                event.weld_id, event.started_at, now, event.threshold, replay=event.replay
            )
        )
        return replace(
            station,
            alerts=station.alerts + 1,
            current=replace(
                base,
                received_at=now,
                p_defect=event.p_defect,
                n_windows=event.n_windows,
                alerted=True,
            ),
        )
    if any(v.weld_id == event.weld_id for v in station.verdicts):
        return station  # a duplicate result with a new event_id (should not happen)
    verdict = Verdict(
        weld_id=event.weld_id,
        ended_at=event.ended_at,
        label_name=event.label_name,
        p_defect=event.p_defect,
        threshold=event.threshold,
        duration_s=event.duration_s,
        alerted=bool(same and current is not None and current.alerted),
        degraded_reasons=tuple(event.degraded_reasons),
        confidence=event.confidence,
        replay=event.replay,
    )
    return replace(
        station,
        current=None if same else current,
        verdicts=(verdict, *station.verdicts)[:history],
        welds=station.welds + 1,
        defects=station.defects + event.label,
    )
