"""What one console process shares between its routes, its MQTT ingest and its start-up:
`ConsoleState` (fleet, history, clip folders, the live hub and the page renderer), and the
two ways the live cards are filled from the history (`seed_from_history` after a restart,
`refresh_false_alarms` after a review).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.console.clipfiles import ClipFolders
from monitor.console.fleet import COMMAND_LINE_MUTE, Fleet
from monitor.console.ingest import Ingest
from monitor.console.live import Hub
from monitor.console.security import CsrfGuard
from monitor.console.store import ConsoleDb, StoreError, WeldStore
from monitor.console.views import FragmentRenderer, make_environment
from monitor.live.state import Change


@dataclass
class ConsoleState:
    """Everything the routes share (one per console process)."""

    fleet: Fleet
    db: ConsoleDb
    folders: ClipFolders
    csrf: CsrfGuard
    users: dict[str, str] | None = None
    ingest: Ingest | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    review_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    hub: Hub = field(init=False)
    env: Any = field(init=False)
    fragments: FragmentRenderer = field(init=False)

    def __post_init__(self) -> None:
        self.env = make_environment()
        # The cards' mute buttons post forms: fragments carry the page's CSRF token too.
        self.fragments = FragmentRenderer(
            self.env,
            self.fleet,
            {"csrf_token": self.csrf.token, "thumbnails": self.folders.clips is not None},
        )
        self.hub = Hub(self.fragments)

    def changed(self, change: Change) -> None:
        self.hub.changed(change)


async def refresh_false_alarms(state: ConsoleState) -> None:
    """Copy the per-station false-alarm counts from the history into the live cards."""
    counts = await state.db.call(WeldStore.station_counts)
    for change in state.fleet.set_false_alarms(
        {(c.prefix, c.station): c.false_alarms for c in counts}
    ):
        state.changed(change)


async def seed_from_history(state: ConsoleState, history: int) -> None:
    """After a restart, show each known station's last verdicts and its mute."""
    for prefix, station in await state.db.call(WeldStore.stations):
        verdicts = await state.db.call(WeldStore.recent_verdicts, prefix, station, history)
        state.fleet.seed(prefix, station, verdicts)
    for prefix, station, muted_by in await state.db.call(WeldStore.mutes):
        known = state.fleet.groups.get(prefix)
        current = known.stations.get(station) if known else None
        if current is None or current.muted_by != COMMAND_LINE_MUTE:  # --mute stays fixed
            state.fleet.set_muted(prefix, station, muted_by)
    with contextlib.suppress(StoreError):
        await refresh_false_alarms(state)
