"""The MQTT publisher: every event into the durable outbox or straight to the socket.

Ownership and overload:

- QoS 1 events (start, alert, result, error) go through the durable :class:`Outbox`; the
  publisher sends them one at a time in insertion order and acks each row after the broker's
  PUBACK, so a lost connection or a crash re-sends (at-least-once, dedupe on ``event_id``).
  When the outbox cannot be written, events are held in memory, published from there and
  written back with back-off (:class:`monitor.publish.spool.Spool`); without an outbox
  (replay) they are only held in memory.
- QoS 0 progress goes straight to the socket while connected (``publish_volatile``); while
  disconnected, or beyond ``MAX_VOLATILE_IN_FLIGHT``, it is dropped and counted, never queued:
  a stale progress value is worse than none.

The publisher holds its two parts rather than being one of them: the queue
(:class:`monitor.publish.spool.Spool`, the one facade over the durable outbox and what is
held in memory) and the connection (:class:`monitor.publish.link.MqttLink`: reconnecting
with back-off, the drain, inbound messages). As an event sink of the router
(`monitor.publish.router`) it is :meth:`MqttPublisher.send`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import aiomqtt
import structlog

from monitor.events import (
    EVENTS_RETAINED,
    QOS_AT_LEAST_ONCE,
    Event,
    WeldProgress,
    WeldResult,
    WeldStart,
    qos_for,
    topic_for,
)
from monitor.publish.link import DEFAULT_CLOSE_TIMEOUT_S, MqttLink, PublisherCounters
from monitor.publish.outbox import NewMessage, Outbox
from monitor.publish.settings import MqttConfig
from monitor.publish.spool import Spool, StateHook

# Progress publishes awaiting the socket at once; more means the link is stalled, so drop.
MAX_VOLATILE_IN_FLIGHT = 64

log = structlog.get_logger(__name__)


class MqttPublisher:
    """Publishes the outbox (and progress) over one reconnecting MQTT connection.

    Args:
        settings: broker, credentials, TLS, prefix and timing.
        outbox: the durable store drained in order; the publisher acks rows, never adds them
            except through :meth:`send`. None: events are held in memory only (replay).
        status_payload: builds the status payload for a state (``online``/``offline``/
            ``stopped``); called at every connect and at close. None: this client publishes
            no status and leaves no will (replay must never touch the daemon's status).
        on_message: called on the event loop with (topic, payload) for inbound messages.
        subscriptions: topic filters (re)subscribed at every connect, e.g. ``weldmon/+/trigger``.
        connect_messages: called at every connect (after ``online`` and the subscriptions);
            the (topic, payload, retain) messages it returns are published at QoS 1 before
            the outbox drains (e.g. Home Assistant discovery configs).
        on_outbox_state: called with (degraded, message) when outbox writes start or stop
            failing (the events are kept in memory meanwhile; see `Spool`).
        publish_progress: False keeps progress out of MQTT (it is still remembered for
            interrupted welds, see :meth:`remember`).
        rng: randomness of the back-off jitter (seed it for reproducible timing).
    """

    def __init__(
        self,
        settings: MqttConfig,
        outbox: Outbox | None,
        *,
        status_payload: Callable[[str], bytes] | None,
        on_message: Callable[[str, bytes], None] | None = None,
        subscriptions: Sequence[str] = (),
        connect_messages: Callable[[], Sequence[tuple[str, bytes, bool]]] | None = None,
        on_outbox_state: StateHook | None = None,
        publish_progress: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.publish_progress = publish_progress
        # The queue wakes the link's drain after a retry stored held events.
        self.spool = Spool(outbox, on_state=on_outbox_state, on_stored=self.notify)
        self.link = MqttLink(
            settings,
            self.spool,
            status_payload=status_payload,
            on_message=on_message,
            subscriptions=subscriptions,
            connect_messages=connect_messages,
            rng=rng,
        )
        self._volatile_tasks: set[asyncio.Task[None]] = set()

    # -- the link's state and lifetime, as the daemon and its metrics read them ----------------

    @property
    def counters(self) -> PublisherCounters:
        """Connection state and monotonic counters (the link's)."""
        return self.link.counters

    @property
    def attempt_times(self) -> Sequence[float]:
        """Monotonic times (s) of recent connect attempts."""
        return self.link.attempt_times

    def notify(self) -> None:
        """Wake the drain after events were queued; safe from any thread."""
        self.link.notify()

    async def run(self) -> None:
        """Connect, serve and reconnect until :meth:`close` is called."""
        await self.link.run()

    async def close(
        self, final_state: str = "stopped", timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S
    ) -> None:
        """Drain as far as the broker allows within ``timeout_s``, publish the retained
        ``final_state``, disconnect cleanly (`MqttLink.close`)."""
        await self.link.close(final_state, timeout_s)

    async def __aenter__(self) -> Self:
        """Run the link in a background task owned by this context."""
        await self.link.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.link.__aexit__(exc_type, exc, tb)

    # -- the seams the daemon calls (event-loop thread unless said otherwise) ----------------

    def send(self, event: Event) -> None:
        """Route one event: progress to :meth:`publish_volatile`, everything else into the
        outbox (durable before this returns, or held in memory while the outbox fails) and
        wake the drain. Never raises for a failing outbox."""
        topic = topic_for(event, self.settings.topic_prefix)
        if isinstance(event, WeldProgress):
            self.remember(event)
            if self.publish_progress:
                self.publish_volatile(topic, event.to_json())
            return
        self.spool.put(
            NewMessage(
                topic,
                event.to_json(),
                qos_for(event),
                EVENTS_RETAINED,
                event.event_id,
                opens_weld=event.weld_id if isinstance(event, WeldStart) else None,
                closes_weld=event.weld_id if isinstance(event, WeldResult) else None,
            )
        )
        self.notify()

    def send_message(self, topic: str, payload: bytes, event_id: str) -> None:
        """A QoS 1 message that is not a weld event (a model change) through the outbox,
        as durable as `send`'s; deduplicated on `event_id` like every event."""
        self.spool.put(NewMessage(topic, payload, QOS_AT_LEAST_ONCE, EVENTS_RETAINED, event_id))
        self.notify()

    def remember(self, progress: WeldProgress) -> None:
        """Keep an open weld's verdict so far in the outbox without publishing it, so a
        daemon killed mid-weld can report it on restart (`monitor/publish/interrupted.py`)."""
        self.spool.note_progress(progress)

    def publish_volatile(self, topic: str, payload: bytes) -> None:
        """Send a QoS 0 message now if connected; otherwise drop and count it."""
        client = self.link.live_client
        if client is None or len(self._volatile_tasks) >= MAX_VOLATILE_IN_FLIGHT:
            self.counters.dropped_volatile += 1
            return
        task = asyncio.get_running_loop().create_task(client.publish(topic, payload, qos=0))
        self._volatile_tasks.add(task)
        task.add_done_callback(self._volatile_done)

    async def announce(self, state: str = "online") -> bool:
        """Publish the retained status now (e.g. after a reload changed the model it names);
        False when disconnected or when this client publishes no status."""
        if not self.link.publishes_status:
            return False
        return await self.publish_now(*self.link.status(state), retain=True)

    async def publish_all(self, messages: Sequence[tuple[str, bytes, bool]], what: str) -> int:
        """`publish_now` each (topic, payload, retain) at QoS 1; logs and returns how many
        went out (``what`` names them in the log line)."""
        sent = sum([await self.publish_now(t, p, retain=r) for t, p, r in messages])
        log.info("mqtt.published_now", what=what, messages=sent, of=len(messages))
        return sent

    async def publish_now(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> bool:
        """Publish one message on the live connection (not through the outbox); False when
        disconnected or the publish failed. For messages that are re-sent on every connect
        anyway (status, discovery), so a loss is repaired by the next connect."""
        client = self.link.live_client
        if client is None:
            return False
        try:
            await client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            log.warning("mqtt.publish_now_failed", topic=topic, error=str(exc))
            return False
        return True

    def _volatile_done(self, task: asyncio.Task[None]) -> None:
        self._volatile_tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            self.counters.dropped_volatile += 1
        else:
            self.counters.published_volatile += 1
