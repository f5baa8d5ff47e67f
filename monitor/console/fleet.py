"""What the overview shows right now: every daemon prefix, its retained status, its stations,
each station's current weld and last verdicts, and the console's own broker link.

Mutated only on the event loop (the MQTT loop applies messages, the web layer reads), so no
locks. The rules follow `weldmon watch`:

- delivery is at-least-once, so events are deduplicated on ``event_id`` (a bounded memory);
- a console started mid-weld opens the current weld from its first progress or alert;
- progress or an alert for a weld that already has a verdict is ignored (QoS 0 progress can
  overtake, or trail, the QoS 1 result);
- messages that are not weldmon events are counted and shown, never fatal.

Every ``apply_*`` returns the :class:`Change` to push to browsers (None: nothing changed).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from monitor.events import (
    ErrorEvent,
    StatusMessage,
    WeldAlert,
    WeldProgress,
    WeldResult,
    WeldStart,
)

DEFAULT_HISTORY = 5  # verdicts per station card
DEDUPE_WINDOW = 4096  # event ids remembered: a whole plant's events during a long reconnect
ERRORS_KEPT = 5  # daemon error events kept per prefix for the banner
# Weld ids per station remembered as alerted until their result: the next weld may start
# before the previous result arrives (inference lags the audio), so `current` is not enough.
ALERTED_KEPT = 32
COMMAND_LINE_MUTE = "--mute"  # muted_by of stations muted on the command line (fixed)
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


@dataclass
class CurrentWeld:
    """The weld going on at a station, as its last start/progress/alert described it."""

    weld_id: str
    started_at: datetime
    threshold: float
    p_defect: float | None = None  # rolling top-k pool; None before the first window
    n_windows: int = 0
    elapsed_s: float = 0.0
    window_s: float | None = None  # one window's length, from progress (elapsed / windows)
    alerted: bool = False
    banner: bool = False  # its alert raised the banner (not muted, not within the cooldown)
    part_id: str | None = None


@dataclass(frozen=True)
class Verdict:
    """One finished weld, as the station card lists it."""

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
    clip: bool = False  # the result names a clip (the card shows its thumbnail)
    threshold_source: str | None = None  # artifact, config or teach_in (None: from history)


@dataclass
class StationLive:
    """One station under one daemon prefix."""

    prefix: str
    name: str
    history: int = DEFAULT_HISTORY
    current: CurrentWeld | None = None
    verdicts: collections.deque[Verdict] = field(default_factory=collections.deque)
    welds: int = 0  # since the console started
    defects: int = 0
    alerted_welds: int = 0  # finished welds that alerted (each has an ALERT badge)
    alerted_ids: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=ALERTED_KEPT)
    )
    false_alarms: int = 0  # reviewed "good" although judged defect or alerted (all time)
    # Alerting hygiene: a muted station's alerts raise no banner (its cards still say ALERT);
    # muted_by names who muted it ("--mute" for the command line's, fixed while it runs).
    muted_by: str | None = None
    last_banner_at: datetime | None = None  # when its last alert raised the banner
    silenced: int = 0  # alerts that raised no banner (muted or within the cooldown)

    @property
    def key(self) -> str:
        """A stable id for HTML elements and SSE messages."""
        return dom_key(self.prefix, self.name)

    @property
    def muted(self) -> bool:
        return self.muted_by is not None

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
        """Keep the newest `history` verdicts, newest first by when each weld ended (results
        arrive out of order: redelivery, several replays, history seeded after a restart)."""
        ordered = sorted([*self.verdicts, verdict], key=lambda v: v.ended_at, reverse=True)
        self.verdicts = collections.deque(ordered[: self.history])


@dataclass
class PrefixLive:
    """One daemon: its retained status and its stations."""

    prefix: str
    status: StatusMessage | None = None
    stations: dict[str, StationLive] = field(default_factory=dict)
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
    """The console's own link to the broker."""

    broker: str
    state: ConnectionState = "connecting"
    since: datetime | None = None
    attempts: int = 0
    retry_in_s: float | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class Change:
    """What to redraw: one station card, a whole prefix group, or the header."""

    what: Literal["station", "group", "header"]
    prefix: str | None = None
    station: str | None = None


@dataclass(frozen=True)
class ResultFacts:
    """What the live state knew about a weld when its result arrived (for the history)."""

    alerted: bool
    window_s: float | None


def dom_key(*parts: str) -> str:
    """An HTML id from a prefix (and station): readable, and safe in a CSS selector."""
    text = "--".join(parts)
    return "k-" + "".join(c if c.isalnum() or c in "-_" else f"_{ord(c):x}_" for c in text)


class Fleet:
    """The live state of every followed daemon."""

    def __init__(
        self, broker: str, history: int = DEFAULT_HISTORY, alert_cooldown_s: float = 0.0
    ) -> None:
        self.connection = Connection(broker=broker)
        self.history = history
        # After a station's alert banner, its next alerts within this many seconds (of alert
        # time, from the daemon's clock) raise none: a run of bad welds is one banner.
        self.alert_cooldown_s = alert_cooldown_s
        self.groups: dict[str, PrefixLive] = {}
        self.malformed = 0
        self.last_malformed: str | None = None
        self.messages = 0
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    # --- structure -------------------------------------------------------------------------

    def group(self, prefix: str) -> tuple[PrefixLive, bool]:
        """The group of ``prefix`` and whether it was just created."""
        found = self.groups.get(prefix)
        if found is not None:
            return found, False
        created = PrefixLive(prefix)
        self.groups[prefix] = created
        return created, True

    def station(self, prefix: str, name: str) -> tuple[StationLive, bool]:
        """The station and whether it (or its group) was just created."""
        group, new_group = self.group(prefix)
        found = group.stations.get(name)
        if found is not None:
            return found, new_group
        created = StationLive(prefix, name, self.history)
        group.stations[name] = created
        return created, True

    def sorted_groups(self) -> list[PrefixLive]:
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

    def apply_weld(self, prefix: str, event: WeldEvent) -> tuple[Change | None, ResultFacts]:
        """Apply a deduplicated weld event. For a result, ``ResultFacts`` says whether the
        weld had alerted and how long its windows were, as far as the live state knew."""
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
                event.weld_id, event.started_at, event.threshold, part_id=part_id_of(event)
            )
        elif isinstance(event, WeldProgress):
            weld = self._current_for(station, event.weld_id, event.emitted_at, event.threshold)
            weld.threshold, weld.p_defect = event.threshold, event.p_defect
            weld.n_windows, weld.elapsed_s = event.n_windows, event.elapsed_s
            weld.window_s = event.elapsed_s / (event.window_index + 1)
        elif isinstance(event, WeldAlert):
            weld = self._current_for(station, event.weld_id, event.started_at, event.threshold)
            first = not weld.alerted
            weld.p_defect, weld.n_windows, weld.alerted = event.p_defect, event.n_windows, True
            if first:
                weld.banner = self._banner_due(station, event.at)
            if event.weld_id not in station.alerted_ids:
                station.alerted_ids.append(event.weld_id)
            weld.part_id = weld.part_id or part_id_of(event)
        else:
            if self._finish(station, event, facts.alerted):
                change = Change("group", prefix)
        return change, facts

    def _current_for(
        self, station: StationLive, weld_id: str, started_at: datetime, threshold: float
    ) -> CurrentWeld:
        if station.current is None or station.current.weld_id != weld_id:
            station.current = CurrentWeld(weld_id, started_at, threshold)
        return station.current

    def _finish(self, station: StationLive, event: WeldResult, alerted: bool) -> bool:
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

    def seed(self, prefix: str, station_name: str, verdicts: list[Verdict]) -> None:
        """Show verdicts from the history after a restart (newest first)."""
        station, _ = self.station(prefix, station_name)
        for verdict in reversed(verdicts[: self.history]):
            station.add_verdict(verdict)

    def set_false_alarms(self, counts: dict[tuple[str, str], int]) -> list[Change]:
        changes = []
        for (prefix, name), count in counts.items():
            station = self.groups.get(prefix, PrefixLive(prefix)).stations.get(name)
            if station is not None and station.false_alarms != count:
                station.false_alarms = count
                changes.append(Change("station", prefix, name))
        return changes

    def _banner_due(self, station: StationLive, at: datetime) -> bool:
        last = station.last_banner_at
        cooling = last is not None and (at - last).total_seconds() < self.alert_cooldown_s
        if station.muted or cooling:
            station.silenced += 1
            return False
        station.last_banner_at = at
        return True

    def set_muted(self, prefix: str, name: str, muted_by: str | None) -> Change:
        """Mute the station (``muted_by``: who) or unmute it (None); its banner follows."""
        station, new = self.station(prefix, name)
        station.muted_by = muted_by
        return Change("group", prefix) if new else Change("station", prefix, name)

    def active_alerts(self) -> list[tuple[StationLive, CurrentWeld]]:
        """Stations whose running weld has alerted and raised the banner (not muted, not
        within the station's cooldown)."""
        out = []
        for group in self.sorted_groups():
            for name in sorted(group.stations):
                station = group.stations[name]
                weld = station.current
                if weld is not None and weld.alerted and weld.banner and not station.muted:
                    out.append((station, weld))
        return out


def verdict_of(event: WeldResult, alerted: bool) -> Verdict:
    """The card's view of a result."""
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
    )
