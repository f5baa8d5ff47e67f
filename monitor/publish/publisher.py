"""One MQTT connection that publishes the outbox, reconnecting with capped back-off.

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
- Inbound messages on ``subscriptions`` are handed to ``on_message(topic, payload)`` on the
  event loop; an exception there is counted and logged, the connection stays up.

Reconnecting is one loop in :meth:`MqttPublisher.run`: one attempt at a time, waiting a random
time between ``reconnect_min_s`` and an exponentially growing ceiling capped at
``reconnect_max_s`` ("full jitter" with a floor, so many daemons restarting together do not
hammer the broker in lockstep). Every connect publishes the retained ``online`` status (the
last will is the retained ``offline``), restores the subscriptions, then drains the outbox.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

import aiomqtt
import structlog

from deploy.errors import WeldmonError
from monitor.backoff import backoff_delay
from monitor.events import (
    Event,
    WeldProgress,
    WeldResult,
    WeldStart,
    qos_for,
    retain_for,
    status_topic,
    topic_for,
)
from monitor.publish.outbox import NewMessage, Outbox, Priority
from monitor.publish.settings import MqttSettings
from monitor.publish.spool import Spool, StateHook

DRAIN_BATCH = 64  # outbox rows read per query while draining
# Progress publishes awaiting the socket at once; more means the link is stalled, so drop.
MAX_VOLATILE_IN_FLIGHT = 64
DEFAULT_CLOSE_TIMEOUT_S = 5.0
# Share of close()'s timeout spent draining; the rest is kept for the final status publish
# and a clean disconnect, so "stopped" is still sent when the drain cannot finish.
CLOSE_DRAIN_SHARE = 0.7
# Repeated connection failures are logged once per interval (with the count in between).
FAILURE_LOG_INTERVAL_S = 30.0
ATTEMPT_HISTORY = 32  # connect-attempt timestamps kept for diagnostics

log = structlog.get_logger(__name__)


class PublisherError(WeldmonError):
    """The publisher cannot be set up (bad TLS files, used twice)."""


@dataclass
class PublisherCounters:
    """Connection state and monotonic counters, for metrics and health checks."""

    connected: bool = False
    connect_attempts: int = 0
    reconnects: int = 0  # successful connects after the first
    published: int = 0  # outbox messages acknowledged by the broker
    published_volatile: int = 0
    dropped_volatile: int = 0
    received: int = 0
    on_message_errors: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The counters by name, for a metrics exporter."""
        return asdict(self)


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
        settings: MqttSettings,
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
        self.counters = PublisherCounters()
        # Monotonic times (s) of recent connect attempts: shows the back-off at work.
        self.attempt_times: collections.deque[float] = collections.deque(maxlen=ATTEMPT_HISTORY)
        self._outbox = outbox
        self.spool = Spool(outbox, on_state=on_outbox_state, on_stored=self.notify)
        self.publish_progress = publish_progress
        self._status_payload = status_payload
        self._on_message = on_message
        self._subscriptions = list(subscriptions)
        self._connect_messages = connect_messages
        self._rng = rng or random.Random()
        self._tls_context = _tls_context(settings) if settings.tls.enabled else None
        self._failures = 0
        self._ever_connected = False
        self._session_was_up = False  # the current session got past CONNACK and setup
        self._client: aiomqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_deadline = 0.0  # loop time by which draining gives way to "stopped"
        self._final_state = "stopped"
        self._run_task: asyncio.Task[None] | None = None
        self._owned_task: asyncio.Task[None] | None = None
        self._volatile_tasks: set[asyncio.Task[None]] = set()
        self._failure_log = _RateLimitedLog(FAILURE_LOG_INTERVAL_S)

    @property
    def outbox(self) -> Outbox | None:
        """The durable store this publisher drains (None: memory only); `spool` has the
        events waiting in memory as well."""
        return self._outbox

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
                retain_for(event),
                event.event_id,
                Priority.HIGH,
                opens_weld=event.weld_id if isinstance(event, WeldStart) else None,
                closes_weld=event.weld_id if isinstance(event, WeldResult) else None,
            )
        )
        self.notify()

    def remember(self, progress: WeldProgress) -> None:
        """Keep an open weld's verdict so far in the outbox without publishing it, so a
        daemon killed mid-weld can report it on restart (`monitor/publish/interrupted.py`)."""
        self.spool.note_progress(progress)

    def notify(self) -> None:
        """Wake the drain after rows were added to the outbox; safe from any thread."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def publish_volatile(self, topic: str, payload: bytes) -> None:
        """Send a QoS 0 message now if connected; otherwise drop and count it."""
        client = self._client
        if (
            client is None
            or not self.counters.connected
            or len(self._volatile_tasks) >= MAX_VOLATILE_IN_FLIGHT
        ):
            self.counters.dropped_volatile += 1
            return
        task = asyncio.get_running_loop().create_task(client.publish(topic, payload, qos=0))
        self._volatile_tasks.add(task)
        task.add_done_callback(self._volatile_done)

    async def publish_now(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> bool:
        """Publish one message on the live connection (not through the outbox); False when
        disconnected or the publish failed. For messages that are re-sent on every connect
        anyway (status, discovery), so a loss is repaired by the next connect."""
        client = self._client
        if client is None or not self.counters.connected:
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

    # -- lifetime ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve and reconnect until :meth:`close` is called."""
        if self._run_task is not None:
            raise PublisherError("MqttPublisher.run() is already running")
        self._run_task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        retry = self._loop.create_task(self.spool.keep_retrying(), name="weldmon-outbox-retry")
        try:
            while True:
                try:
                    await self._session()
                    return  # a session ends normally only after a clean stop
                except aiomqtt.MqttError as exc:
                    self._connection_failed(exc)
                if self._stopping.is_set() and self._give_up_closing():
                    return
                delay = backoff_delay(
                    self._failures,
                    self.settings.reconnect_min_s,
                    self.settings.reconnect_max_s,
                    self._rng,
                )
                self._failures += 1
                if self._stopping.is_set():
                    # Closing: keep retrying (without hammering) until the drain deadline.
                    remaining = self._stop_deadline - self._loop.time()
                    if remaining <= 0:
                        return
                    await asyncio.sleep(min(delay, remaining))
                else:
                    await self._sleep_unless_stopping(delay)
        finally:
            retry.cancel()
            await asyncio.gather(retry, return_exceptions=True)
            self.counters.connected = False
            self._client = None

    def _give_up_closing(self) -> bool:
        """While closing and disconnected: retry only while there is something to deliver
        and time left. "stopped" alone is not worth waiting for: the broker has already
        published the "offline" will for the lost link."""
        assert self._loop is not None
        return self.spool.depth == 0 or self._loop.time() >= self._stop_deadline

    async def close(
        self, final_state: str = "stopped", timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S
    ) -> None:
        """Drain the outbox as far as the broker allows within ``timeout_s``, publish the
        retained ``final_state``, disconnect cleanly and let :meth:`run` return."""
        task = self._run_task
        if task is None or task.done() or self._loop is None or self._stopping is None:
            return
        self._final_state = final_state
        self._stop_deadline = self._loop.time() + timeout_s * CLOSE_DRAIN_SHARE
        self._stopping.set()
        self.notify()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.error("mqtt.close_timeout", timeout_s=timeout_s, outbox_depth=self.spool.depth)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.spool.close()

    async def __aenter__(self) -> Self:
        """Start :meth:`run` in a background task owned by this context."""
        self._owned_task = asyncio.get_running_loop().create_task(self.run())
        await asyncio.sleep(0)  # let run() register itself before anyone calls close()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
        owned = self._owned_task
        if owned is not None and owned.done() and not owned.cancelled():
            owned.result()  # surface e.g. an OutboxError raised inside run()

    # -- one connection --------------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        s = self.settings
        prefix = s.topic_prefix
        will = None
        if self._status_payload is not None:
            offline = self._status_payload("offline")
            will = aiomqtt.Will(status_topic(prefix), offline, qos=1, retain=True)
        return aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password.get_secret_value() if s.password is not None else None,
            identifier=s.client_id,
            keepalive=s.keepalive_s,
            timeout=s.connect_timeout_s,
            tls_context=self._tls_context,
            will=will,
        )

    async def _session(self) -> None:
        assert self._stopping is not None and self._loop is not None
        self.counters.connect_attempts += 1
        self.attempt_times.append(time.monotonic())
        client = self._make_client()
        async with client:
            self._client = client
            try:
                if self._status_payload is not None:
                    await client.publish(
                        status_topic(self.settings.topic_prefix),
                        self._status_payload("online"),
                        qos=1,
                        retain=True,
                    )
                for topic_filter in self._subscriptions:
                    await client.subscribe(topic_filter, qos=1)
                if self._connect_messages is not None:
                    for topic, payload, retain in self._connect_messages():
                        await client.publish(topic, payload, qos=1, retain=retain)
                self._connected()
                await self._serve(client)
            finally:
                self.counters.connected = False
                self._client = None

    def _connected(self) -> None:
        if self._ever_connected:
            self.counters.reconnects += 1
        self._ever_connected = True
        self._session_was_up = True
        self.counters.connected = True
        log.info(
            "mqtt.connected",
            host=self.settings.host,
            port=self.settings.port,
            after_failures=self._failures,
            outbox_depth=self.spool.depth,
        )
        self._failures = 0
        self._failure_log.reset()

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Receive and drain concurrently; whichever ends first (a disconnect raises in the
        receiver, a clean stop returns from the drain) ends the session."""
        receive = asyncio.create_task(self._receive(client))
        drain = asyncio.create_task(self._drain(client))
        try:
            done, _ = await asyncio.wait({receive, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (receive, drain):
                task.cancel()
            await asyncio.gather(receive, drain, return_exceptions=True)
        for task in done:
            task.result()  # re-raise the MqttError that ended the session

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.counters.received += 1
            if self._on_message is None:
                continue
            payload = message.payload
            # paho hands over bytes; aiomqtt's type also allows str/number/None.
            data = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
            try:
                self._on_message(message.topic.value, data)
            except Exception as exc:  # the handler is the daemon's: count, log, keep the link
                self.counters.on_message_errors += 1
                log.error("mqtt.on_message_failed", topic=message.topic.value, error=repr(exc))

    async def _drain(self, client: aiomqtt.Client) -> None:
        assert self._wake is not None and self._stopping is not None and self._loop is not None
        while True:
            self._wake.clear()  # before reading, so an add() during the read wakes us again
            items = self.spool.pending(DRAIN_BATCH)
            for item in items:
                if self._stopping.is_set() and self._loop.time() >= self._stop_deadline:
                    break
                await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
                self.spool.delivered(item)
                self.counters.published += 1
            else:
                if items:
                    continue
                if not self._stopping.is_set():
                    await self._wake.wait()
                    continue
            await self._publish_final_status(client)
            return

    async def _publish_final_status(self, client: aiomqtt.Client) -> None:
        if self.spool.depth:
            log.warning("mqtt.close_left_pending", outbox_depth=self.spool.depth)
        if self._status_payload is None:
            log.info("mqtt.stopped", state=None)
            return
        await client.publish(
            status_topic(self.settings.topic_prefix),
            self._status_payload(self._final_state),
            qos=1,
            retain=True,
        )
        log.info("mqtt.stopped", state=self._final_state)

    # -- failures ----------------------------------------------------------------------------

    def _connection_failed(self, exc: aiomqtt.MqttError) -> None:
        self.counters.last_error = f"{type(exc).__name__}: {exc}"
        if self._session_was_up:
            self._session_was_up = False
            log.warning("mqtt.disconnected", error=self.counters.last_error)
            return
        suppressed = self._failure_log.allow()
        if suppressed is not None:
            log.warning(
                "mqtt.connect_failed",
                host=self.settings.host,
                port=self.settings.port,
                error=self.counters.last_error,
                failures=self._failures + 1,
                suppressed_since_last_log=suppressed,
            )

    async def _sleep_unless_stopping(self, delay_s: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)


class _RateLimitedLog:
    """Allows one log line per interval; counts what it suppressed in between."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last = -float("inf")
        self._suppressed = 0

    def allow(self) -> int | None:
        """The number suppressed since the last allowed line, or None to stay quiet now."""
        now = time.monotonic()
        if now - self._last < self._interval_s:
            self._suppressed += 1
            return None
        self._last, suppressed, self._suppressed = now, self._suppressed, 0
        return suppressed

    def reset(self) -> None:
        """Log the next failure at once (a new outage starts)."""
        self._last = -float("inf")
        self._suppressed = 0


def _tls_context(settings: MqttSettings) -> ssl.SSLContext:
    tls = settings.tls
    try:
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None
        )
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (ssl.SSLError, OSError) as exc:
        raise PublisherError(f"mqtt.tls: cannot load certificates: {exc}") from exc
    # paho semantics of "insecure": skip the hostname check, still verify the chain.
    context.check_hostname = not tls.insecure
    return context
