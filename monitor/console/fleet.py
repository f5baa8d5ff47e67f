"""The console's live state: the live-view core (``monitor.live.state``, the rules shared
with `weldmon watch`) plus what only the console has, its alerting hygiene and the figures
it copies in from its history.

- A muted station's alerts raise no banner (its cards still say ALERT); ``muted_by`` names
  who muted it (``--mute`` for the command line's, fixed while the console runs).
- After a station's banner, its next alerts within ``alert_cooldown_s`` (of alert time,
  from the daemon's clock) raise none: a run of bad welds is one banner.
- False alarms (reviewed "good" although judged defect or alerted) come from the history.

Mutated only on the event loop, like the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from monitor.events import WeldAlert
from monitor.live.state import (
    DEFAULT_HISTORY,
    Change,
    CurrentWeld,
    LiveState,
    PrefixLive,
    StationLive,
    Verdict,
)

__all__ = ["COMMAND_LINE_MUTE", "DEFAULT_HISTORY", "Fleet", "StationCard"]

COMMAND_LINE_MUTE = "--mute"  # muted_by of stations muted on the command line (fixed)


@dataclass
class StationCard(StationLive):
    """A station as its console card shows it: the shared live facts and its alerting."""

    muted_by: str | None = None  # who muted its banner; None: not muted
    last_banner_at: datetime | None = None  # when its last alert raised the banner
    banner_weld: str | None = None  # the weld whose alert raised the banner last
    silenced: int = 0  # alerts that raised no banner (muted or within the cooldown)
    false_alarms: int = 0  # reviewed "good" although judged defect or alerted (all time)

    @property
    def muted(self) -> bool:
        return self.muted_by is not None


class Fleet(LiveState[StationCard]):
    """The live state of every followed daemon, with the console's alerting rules."""

    def __init__(
        self, broker: str, history: int = DEFAULT_HISTORY, alert_cooldown_s: float = 0.0
    ) -> None:
        super().__init__(broker, StationCard, history)
        self.alert_cooldown_s = alert_cooldown_s

    def first_alert(self, station: StationCard, weld: CurrentWeld, event: WeldAlert) -> None:
        """Decide once per weld whether its alert raises the banner."""
        last = station.last_banner_at
        cooling = last is not None and (event.at - last).total_seconds() < self.alert_cooldown_s
        if station.muted or cooling:
            station.silenced += 1
            return
        station.last_banner_at = event.at
        station.banner_weld = weld.weld_id

    def set_muted(self, prefix: str, name: str, muted_by: str | None) -> Change:
        """Mute the station (``muted_by``: who) or unmute it (None); its banner follows."""
        station, new = self.station(prefix, name)
        station.muted_by = muted_by
        return Change("group", prefix) if new else Change("station", prefix, name)

    def active_alerts(self) -> list[tuple[StationCard, CurrentWeld]]:
        """Stations whose running weld has alerted and raised the banner (not muted, not
        within the station's cooldown)."""
        out = []
        for group in self.sorted_groups():
            for name in sorted(group.stations):
                station = group.stations[name]
                weld = station.current
                if (
                    weld is not None
                    and weld.alerted
                    and station.banner_weld == weld.weld_id
                    and not station.muted
                ):
                    out.append((station, weld))
        return out

    def seed(self, prefix: str, station_name: str, verdicts: list[Verdict]) -> None:
        """Show verdicts from the history after a restart (newest first)."""
        station, _ = self.station(prefix, station_name)
        for verdict in reversed(verdicts[: self.history]):
            station.add_verdict(verdict)

    def set_false_alarms(self, counts: dict[tuple[str, str], int]) -> list[Change]:
        """Copy per-station false-alarm counts in; the stations whose count changed."""
        changes = []
        for (prefix, name), count in counts.items():
            group = self.groups.get(prefix, PrefixLive[StationCard](prefix))
            station = group.stations.get(name)
            if station is not None and station.false_alarms != count:
                station.false_alarms = count
                changes.append(Change("station", prefix, name))
        return changes
