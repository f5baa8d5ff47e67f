"""Where events go: one list of equal sinks behind one small protocol.

The pipeline, the daemon and replay hand every event they make to an :class:`EventRouter`;
the router hands it, in order, to each :class:`EventSink`: the journal (`log_event`), the
MQTT publisher (durable outbox, `MqttPublisher.send`), the metrics and status line, teach-in,
OPC UA, replay's stdout. A new output is one more sink; nothing else changes (the shape of
Frigate's communicator list).

Ownership and overload: a sink is called on the event loop, once per event, in the order the
events were made; it must return quickly (the outbox's synchronous, fsynced write is the
slowest one allowed) and must not keep the event loop waiting on a network. Events are
immutable; a sink keeps what it needs. The MQTT sink is added first, so an event is durable
in the outbox before any other sink sees it. Shadow verdicts are not events of this router:
they go straight to the broker (`MqttPublisher.publish_now` from the daemon), never through
the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import structlog

from monitor.events import Event, WeldAlert, WeldProgress, WeldResult, WeldStart

log = structlog.get_logger(__name__)


class EventSink(Protocol):
    """One output of the daemon's events (see the module docstring for the rules)."""

    def __call__(self, event: Event, /) -> None: ...


def log_event(event: Event) -> None:
    """The journal's sink: results, starts and alerts at info, other non-progress events
    (errors) at warning with every field; progress is not logged (one per window)."""
    if isinstance(event, WeldResult):
        log.info(
            "weld_result",
            weld_id=event.weld_id,
            station=event.station,
            label=event.label_name,
            p_defect=round(event.p_defect, 6),
            n_windows=event.n_windows,
            duration_s=round(event.duration_s, 3),
            degraded_reasons=event.degraded_reasons,
        )
    elif isinstance(event, WeldStart | WeldAlert):
        log.info(event.kind, weld_id=event.weld_id, station=event.station)
    elif not isinstance(event, WeldProgress):
        log.warning(event.kind, **event.model_dump(mode="json", exclude={"kind"}))


@dataclass
class EventRouter:
    """Fans every event out to its sinks, in order, on the event loop.

    `replay` marks every event (``replay: true``) before any sink sees it; `counts` counts
    the events by kind (the daemon's stop line, replay's and the soak's figures)."""

    sinks: list[EventSink] = field(default_factory=lambda: [log_event])
    counts: dict[str, int] = field(default_factory=dict)
    replay: bool = False

    def add(self, sink: EventSink, *, durable: bool = False) -> None:
        """Add a sink after the others; ``durable`` (the MQTT publisher's outbox) puts it
        right after the journal, before every side sink, so an event is stored before a
        side path sees it."""
        if durable:
            self.sinks.insert(1 if self.sinks and self.sinks[0] is log_event else 0, sink)
        else:
            self.sinks.append(sink)

    def __call__(self, event: Event) -> None:
        if self.replay:
            event = event.model_copy(update={"replay": True})
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
        for sink in self.sinks:
            sink(event)
