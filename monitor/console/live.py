"""Live updates for the overview: changes rendered once as HTML fragments, fanned out to every
open page over server-sent events.

Each browser gets a bounded queue. A page that cannot keep up (a laptop asleep, a dead TCP
link) is dropped rather than buffered without end; its EventSource reconnects on its own and
the first message of every connection is a full snapshot, so nothing is missed for long.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from monitor.live.state import Change

CLIENT_QUEUE = 256  # fragments buffered per page before it is dropped
MAX_CLIENTS = 64  # open overview pages at once; more are refused (the HTTP server stays up)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Fragment:
    """Replace the element ``target`` with ``html`` (or append it to ``parent`` when the
    page does not have it yet)."""

    target: str
    html: str
    parent: str | None = None

    def data(self) -> str:
        return json.dumps({"target": self.target, "html": self.html, "parent": self.parent})


class Hub:
    """Fan-out of rendered fragments to SSE clients."""

    def __init__(self, render: Callable[[Change], list[Fragment]]) -> None:
        self._render = render
        self._clients: set[asyncio.Queue[Fragment | None]] = set()
        self.dropped_clients = 0
        self.refused_clients = 0
        self.render_errors = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    def subscribe(self) -> asyncio.Queue[Fragment | None] | None:
        """A queue for a new page, or None when :data:`MAX_CLIENTS` are already open."""
        if len(self._clients) >= MAX_CLIENTS:
            self.refused_clients += 1
            return None
        queue: asyncio.Queue[Fragment | None] = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Fragment | None]) -> None:
        self._clients.discard(queue)

    def changed(self, change: Change) -> None:
        """Render ``change`` once and queue it for every page (called on the event loop)."""
        if not self._clients:
            return
        try:
            fragments = self._render(change)
        except Exception:  # a template bug must not stop the MQTT loop that called us
            self.render_errors += 1
            log.exception("console_render_failed", change=repr(change))
            return
        for queue in list(self._clients):
            try:
                for fragment in fragments:
                    queue.put_nowait(fragment)
            except asyncio.QueueFull:
                self._clients.discard(queue)
                self.dropped_clients += 1
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)  # tells the stream to end; the page reconnects
