"""What a live view knows right now: every daemon prefix it follows, its retained status, its
stations, each station's current weld and last verdicts, and the viewer's own broker link.

One set of rules for `weldmon watch` (one prefix) and the console (any number):

- delivery is at-least-once, so events are deduplicated on ``event_id`` (a bounded memory);
- a view started mid-weld opens the current weld from its first progress or alert;
- progress or an alert for a weld that already has a verdict is ignored (QoS 0 progress can
  overtake, or trail, the QoS 1 result);
- a weld that alerted counts once, however many alert messages its redeliveries brought,
  and keeps its badge when the next weld starts before its result (inference lags audio);
- verdicts are kept newest first by when each weld ended (results arrive out of order:
  redelivery, several replays, history seeded after a restart);
- messages that are not weldmon events are counted, never fatal.

Mutated only on the event loop (the feed applies messages, the views read), so no locks and
no clock of its own: callers pass ``now``. Every ``apply_*`` returns the :class:`Change` to
redraw (None: nothing changed). The station type is a parameter so a view can keep its own
per-station facts beside the shared ones (the console's mutes and banners).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from monitor.events import (
    ErrorEvent,
    StatusMessage,
    WeldAlert,
    WeldProgress,
    WeldResult,
    WeldStart,
)

DEFAULT_HISTORY = 5  # verdicts per station: fits a station card or a 40-line terminal
DEDUPE_WINDOW = 4096  # event ids remembered: a whole plant's events during a long reconnect
ERRORS_KEPT = 5  # daemon error events kept per prefix (newest first)
# Weld ids per station remembered as alerted until their result: the next weld may start
# before the previous result arrives (inference lags the audio), so `current` is not enough.
ALERTED_KEPT = 32
ConnectionState = Literal["connecting", "connected", "disconnected"]
WeldEvent = WeldStart | WeldProgress | WeldAlert | WeldResult


def part_id_of(event: Any) -> str | None:
    """The weld's ``context.part_id`` when the event carries one (an optional field the
    daemon may or may not send), else None."""
    context = getattr(event, "context", None)
    if isinstance(context, dict):
        value = context.get("part_id")
    else:
        value = getattr(context, "part_id", None)
    return str(value) if value is not None else None


def dom_key(*parts: str) -> str:
    """A stable id from a prefix (and station): readable, and safe in a CSS selector."""
    text = "--".join(parts)
    return "k-" + "".join(c if c.isalnum() or c in "-_" else f"_{ord(c):x}_" for c in text)


@dataclass
class CurrentWeld:
    """The weld going on at a station, as its last start/progress/alert described it."""

    weld_id: str
    started_at: datetime
    threshold: float
    received_at: datetime  # the viewer's clock when the last message about it arrived
    p_defect: float | None = None  # rolling top-k pool; None before the first window
    n_windows: int = 0
    elapsed_s: float = 0.0  # from the daemon's sample clock, at the last progress
    window_s: float | None = None  # one window's length, from progress (elapsed / windows)
    alerted: bool = False
    part_id: str | None = None
    replay: bool = False  # its events came from `weldmon replay --publish`, not a live weld


@dataclass(frozen=True)
class Verdict:
    """One finished weld, as a station lists it."""

    weld_id: str
    ended_at: datetime
    label: int
    label_name: str
    p_defect: float
    threshold: float
    duration_s: float
    alerted: bool
    degraded_reasons: tuple[str, ...] = ()
    part_id: str | None = None
    replay: bool = False  # published by `weldmon replay --publish`, not a live weld
    clip: bool = False  # the result names a clip (the console shows its thumbnail)
    threshold_source: str | None = None  # artifact, config or teach_in (None: from history)
    confidence: str | None = None  # "high" | "low"; None: the model has no calibration


def verdict_of(event: WeldResult, alerted: bool) -> Verdict:
    """A station's view of a result."""
    return Verdict(
        weld_id=event.weld_id,
        ended_at=event.ended_at,
        label=event.label,
        label_name=event.label_name,
        p_defect=event.p_defect,
        threshold=event.threshold,
        duration_s=event.duration_s,
        alerted=alerted,
        degraded_reasons=tuple(event.degraded_reasons),
        part_id=part_id_of(event),
        replay=event.replay,
        clip=event.clip_path is not None,
        threshold_source=str(event.threshold_source),
        confidence=event.confidence,
    )


@dataclass
class StationLive:
    """One station under one daemon prefix."""

    prefix: str
    name: str
    history: int = DEFAULT_HISTORY
    current: CurrentWeld | None = None
    verdicts: collections.deque[Verdict] = field(default_factory=collections.deque)
    welds: int = 0  # since the view started
    defects: int = 0
    alerted_welds: int = 0  # finished welds that alerted (each has an ALERT badge)
    alerted_ids: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=ALERTED_KEPT)
    )

    @property
    def key(self) -> str:
        """A stable id for HTML elements and SSE messages."""
        return dom_key(self.prefix, self.name)

    @property
    def alerts(self) -> int:
        """Welds that alerted, the running one included: one per ALERT badge, however many
        alert messages a weld's redeliveries brought."""
        running = self.current is not None and self.current.alerted
        return self.alerted_welds + int(running)

    @property
    def taught(self) -> bool:
        """The newest verdict was judged by the station's teach-in threshold (the badge)."""
        return bool(self.verdicts) and self.verdicts[0].threshold_source == "teach_in"

    def add_verdict(self, verdict: Verdict) -> None:
        """Keep the newest `history` verdicts, newest first by when each weld ended."""
        ordered = sorted([*self.verdicts, verdict], key=lambda v: v.ended_at, reverse=True)
        self.verdicts = collections.deque(ordered[: self.history])


StationT = TypeVar("StationT", bound=StationLive)


@dataclass
class PrefixLive(Generic[StationT]):
    """One daemon: its retained status and its stations."""

    prefix: str
    status: StatusMessage | None = None
    stations: dict[str, StationT] = field(default_factory=dict)
    errors: collections.deque[ErrorEvent] = field(
        default_factory=lambda: collections.deque(maxlen=ERRORS_KEPT)
    )
    malformed: int = 0
    replayed: bool = False  # a result from `weldmon replay --publish` arrived here
    live: bool = False  # a result from a live daemon arrived here
    last_result: WeldResult | None = None  # the newest-ending result (the system page)

    @property
    def key(self) -> str:
        return dom_key(self.prefix)

    @property
    def state(self) -> str:
        """online / offline / stopped from the retained status; without one, ``replay``
        when only `weldmon replay --publish` published here (it never sets a status), else
        ``unknown``."""
        if self.status is not None:
            return self.status.state
        return "replay" if self.replayed and not self.live else "unknown"


@dataclass
class Connection:
    """The viewer's own link to the broker."""

    broker: str
    state: ConnectionState = "connecting"
    since: datetime | None = None
    attempts: int = 0  # failed attempts since the last success
    retry_in_s: float | None = None  # back-off before the next attempt (while disconnected)
    last_error: str | None = None


@dataclass(frozen=True)
class Change:
    """What to redraw: one station, a whole prefix group, or the header."""

    what: Literal["station", "group", "header"]
    prefix: str | None = None
    station: str | None = None


@dataclass(frozen=True)
class ResultFacts:
    """What the live state knew about a weld when its result arrived (for a history)."""

    alerted: bool
    window_s: float | None


class LiveState(Generic[StationT]):
    """The live state of every followed daemon. ``make_station(prefix, name, history)``
    builds a station the first time one is seen (:class:`StationLive` or a view's own
    subclass)."""

    def __init__(
        self,
        broker: str,
        make_station: Callable[[str, str, int], StationT],
        history: int = DEFAULT_HISTORY,
    ) -> None:
        self.connection = Connection(broker=broker)
        self.history = history
        self.groups: dict[str, PrefixLive[StationT]] = {}
        self.malformed = 0
        self.last_malformed: str | None = None
        self.messages = 0
        self._make_station = make_station
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    # --- structure -------------------------------------------------------------------------

    def group(self, prefix: str) -> tuple[PrefixLive[StationT], bool]:
        """The group of ``prefix`` and whether it was just created."""
        found = self.groups.get(prefix)
        if found is not None:
            return found, False
        created: PrefixLive[StationT] = PrefixLive(prefix)
        self.groups[prefix] = created
        return created, True

    def station(self, prefix: str, name: str) -> tuple[StationT, bool]:
        """The station and whether it (or its group) was just created."""
        group, new_group = self.group(prefix)
        found = group.stations.get(name)
        if found is not None:
            return found, new_group
        created = self._make_station(prefix, name, self.history)
        group.stations[name] = created
        return created, True

    def sorted_groups(self) -> list[PrefixLive[StationT]]:
        return [self.groups[p] for p in sorted(self.groups)]

    # --- messages --------------------------------------------------------------------------

    def set_connection(
        self,
        state: ConnectionState,
        now: datetime,
        *,
        retry_in_s: float | None = None,
        error: str | None = None,
    ) -> Change:
        """Record a change of the viewer's own link (attempts count failures since the last
        success; the last error stays until a new one replaces it)."""
        c = self.connection
        c.attempts = 0 if state == "connected" else c.attempts + (state == "disconnected")
        c.state, c.since = state, now
        c.retry_in_s = retry_in_s if state == "disconnected" else None
        if error is not None:
            c.last_error = error
        return Change("header")

    def bad_message(self, prefix: str | None, reason: str) -> Change:
        """Count a message that is not a weldmon message (shown in the header)."""
        self.malformed += 1
        self.last_malformed = reason[:300]
        if prefix is not None:
            self.group(prefix)[0].malformed += 1
        return Change("header")

    def apply_status(self, prefix: str, status: StatusMessage | None) -> Change:
        """The daemon's retained status (None: cleared, no daemon announces itself)."""
        group = self.group(prefix)[0]
        group.status = status
        return Change("group", prefix)

    def is_new(self, event_id: str) -> bool:
        """Remember ``event_id``; False if it was seen before (a redelivery)."""
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        while len(self._seen) > DEDUPE_WINDOW:
            self._seen.popitem(last=False)
        return True

    def apply_error(self, prefix: str, event: ErrorEvent) -> Change:
        group = self.group(prefix)[0]
        group.errors.appendleft(event)
        return Change("group", prefix)

    def apply_weld(
        self, prefix: str, event: WeldEvent, now: datetime | None = None
    ) -> tuple[Change | None, ResultFacts]:
        """Apply a deduplicated weld event (``now``: the viewer's clock, read when None).
        For a result, ``ResultFacts`` says whether the weld had alerted and how long its
        windows were, as far as the live state knew."""
        received_at = now if now is not None else datetime.now(UTC)
        station, new = self.station(prefix, event.station)
        change = Change("group", prefix) if new else Change("station", prefix, event.station)
        finished = any(v.weld_id == event.weld_id for v in station.verdicts)
        current = station.current
        same = current is not None and current.weld_id == event.weld_id
        facts = ResultFacts(
            alerted=event.weld_id in station.alerted_ids
            or bool(same and current is not None and current.alerted),
            window_s=current.window_s if same and current is not None else None,
        )
        if finished:
            return None, facts  # late progress/alert, or a second result for one weld
        if isinstance(event, WeldStart):
            station.current = CurrentWeld(
                event.weld_id,
                event.started_at,
                event.threshold,
                received_at,
                part_id=part_id_of(event),
                replay=event.replay,
            )
        elif isinstance(event, WeldProgress):
            weld = self._current_for(station, event, event.emitted_at, received_at)
            weld.threshold, weld.p_defect = event.threshold, event.p_defect
            weld.n_windows, weld.elapsed_s = event.n_windows, event.elapsed_s
            weld.window_s = event.elapsed_s / (event.window_index + 1)
        elif isinstance(event, WeldAlert):
            weld = self._current_for(station, event, event.started_at, received_at)
            first = not weld.alerted
            weld.p_defect, weld.n_windows, weld.alerted = event.p_defect, event.n_windows, True
            if first:
                self.first_alert(station, weld, event)
            if event.weld_id not in station.alerted_ids:
                station.alerted_ids.append(event.weld_id)
            weld.part_id = weld.part_id or part_id_of(event)
        elif self._finish(station, event, facts.alerted):
            change = Change("group", prefix)
        return change, facts

    def first_alert(self, station: StationT, weld: CurrentWeld, event: WeldAlert) -> None:
        """Called once per weld, at its first alert; a view's own alert rules go here."""

    def _current_for(
        self,
        station: StationT,
        event: WeldProgress | WeldAlert,
        started_at: datetime,
        received_at: datetime,
    ) -> CurrentWeld:
        if station.current is None or station.current.weld_id != event.weld_id:
            station.current = CurrentWeld(
                event.weld_id, started_at, event.threshold, received_at, replay=event.replay
            )
        station.current.received_at = received_at
        return station.current

    def _finish(self, station: StationT, event: WeldResult, alerted: bool) -> bool:
        """Record the verdict; True when the daemon's badge changed with it (replay)."""
        group = self.groups[station.prefix]
        was = group.state
        group.replayed |= event.replay
        group.live |= not event.replay
        if group.last_result is None or event.ended_at >= group.last_result.ended_at:
            group.last_result = event
        station.add_verdict(verdict_of(event, alerted))
        if station.current is not None and station.current.weld_id == event.weld_id:
            station.current = None
        station.welds += 1
        station.defects += event.label
        station.alerted_welds += int(alerted)
        return group.state != was
