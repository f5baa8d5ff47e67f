"""The system page's rows: each followed daemon's health as the console can see it over
MQTT (retained status, the model it names, uptime since its last connect, its newest weld,
its latest health errors: device lost, dead microphone, outbox degraded), and the console's
own counters. Pure: built from the live state at request time.

The console never talks to a daemon directly, so "outbox" here is what the daemon reported
(an ``outbox_degraded`` error event) rather than its queue depth; the daemon's own /healthz
and /metrics have the numbers (docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from monitor.console.fleet import StationCard
from monitor.console.views import HEALTH_CODES
from monitor.live.state import PrefixLive

OUTBOX_CODE = "outbox_degraded"


@dataclass(frozen=True)
class HealthNote:
    """The latest error event of one health code."""

    code: str
    message: str
    at: datetime
    station: str | None


@dataclass(frozen=True)
class DaemonHealth:
    """One daemon prefix on the system page."""

    prefix: str
    state: str  # online / offline / stopped / unknown / replay
    since: datetime | None  # of the retained status (an online daemon: its last connect)
    uptime_s: float | None  # online only: since its last connect
    version: str | None
    client_id: str | None
    model_sha256: str | None  # from the status, else from the newest result
    model: str | None  # name and version from the newest result (artifacts may name none)
    model_differs: bool  # the newest result was judged by another model than the status names
    stations: int
    last_weld_at: datetime | None
    health: list[HealthNote]  # newest first, one per code
    outbox: str  # "no problem reported" or the latest outbox_degraded message


def daemon_health(group: PrefixLive[StationCard], now: datetime) -> DaemonHealth:
    """What the system page says about one daemon."""
    status, last = group.status, group.last_result
    latest: dict[str, HealthNote] = {}
    for e in group.errors:  # newest first
        if e.code in HEALTH_CODES and e.code not in latest:
            latest[e.code] = HealthNote(e.code, e.message, e.emitted_at, e.station)
    status_sha = status.model_sha256 if status is not None else None
    model = None
    if last is not None and last.model_name:
        model = f"{last.model_name} {last.model_version or ''}".strip()
    outbox = latest.get(OUTBOX_CODE)
    online = status is not None and status.state == "online"
    return DaemonHealth(
        prefix=group.prefix,
        state=group.state,
        since=status.at if status is not None else None,
        uptime_s=(now - status.at).total_seconds() if online and status is not None else None,
        version=status.version if status is not None else None,
        client_id=status.client_id if status is not None else None,
        model_sha256=status_sha or (last.model_sha256 if last is not None else None),
        model=model,
        model_differs=bool(status_sha and last is not None and last.model_sha256 != status_sha),
        stations=len(group.stations),
        last_weld_at=last.ended_at if last is not None else None,
        health=list(latest.values()),
        outbox=f"degraded: {outbox.message}" if outbox else "no problem reported",
    )


def duration_text(seconds: float | None) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``42 s``: uptime at a glance."""
    if seconds is None:
        return ""
    s = int(max(seconds, 0))
    days, hours, minutes = s // 86_400, s % 86_400 // 3600, s % 3600 // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{s} s"
