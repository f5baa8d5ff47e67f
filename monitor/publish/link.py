"""The publisher's MQTT link: one connection at a time, reconnecting with capped back-off,
draining the outbox in order and handing inbound messages on.

Reconnecting is one loop in :meth:`MqttLink.run`: one attempt at a time, waiting
`monitor.backoff.backoff_delay` (capped exponential with full jitter, from
``reconnect_min_s`` to ``reconnect_max_s``). Every connect publishes the retained ``online``
status (the last will is the retained ``offline``), restores the subscriptions, publishes the
connect messages, then drains. Inbound messages on ``subscriptions`` are handed to
``on_message(topic, payload)`` on the event loop; an exception there is counted and logged,
the connection stays up. Retained inbound messages and empty payloads (a retained message
being cleared) are ignored, counted and logged: commands and triggers are acted on only when
they are sent. What goes into the queue, and progress: `monitor.publish.publisher`, which
holds one link (composed, not inherited: the link knows nothing of events).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

import aiomqtt
import structlog

from deploy.errors import WeldmonError
from monitor.backoff import RateLimitedLog, backoff_delay
from monitor.events import status_topic
from monitor.publish.settings import MqttConfig
from monitor.publish.spool import Spool

DRAIN_BATCH = 64  # outbox rows read per query while draining
DEFAULT_CLOSE_TIMEOUT_S = 5.0
# Share of close()'s timeout spent draining; the rest is kept for the final status publish
# and a clean disconnect, so "stopped" is still sent when the drain cannot finish.
CLOSE_DRAIN_SHARE = 0.7
# Repeated connection failures are logged once per interval (with the count in between).
FAILURE_LOG_INTERVAL_S = 30.0
ATTEMPT_HISTORY = 32  # connect-attempt timestamps kept for diagnostics

log = structlog.get_logger(__name__)


class PublisherError(WeldmonError):
    """The publisher was used twice (run() while it already runs)."""


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
    # Inbound messages never handed on: a retained copy (the broker replays it at every
    # subscribe, so acting on it would repeat an old command at each reconnect) and an empty
    # payload (what clearing a retained message delivers).
    ignored_retained: int = 0
    ignored_empty: int = 0
    on_message_errors: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The counters by name, for a metrics exporter."""
        return asdict(self)


class MqttLink:
    """One reconnecting MQTT connection that drains ``queue`` in order (the arguments are
    :class:`~monitor.publish.publisher.MqttPublisher`'s, which builds and holds the link).

    Args:
        settings: broker, credentials, TLS, prefix and timing.
        queue: the events to deliver (the outbox behind its spool); the link reads them in
            order and reports each delivered one, never adds any.
        status_payload, on_message, subscriptions, connect_messages, rng: see
            :class:`~monitor.publish.publisher.MqttPublisher`.
    """

    def __init__(
        self,
        settings: MqttConfig,
        queue: Spool,
        *,
        status_payload: Callable[[str], bytes] | None,
        on_message: Callable[[str, bytes], None] | None = None,
        subscriptions: Sequence[str] = (),
        connect_messages: Callable[[], Sequence[tuple[str, bytes, bool]]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.counters = PublisherCounters()
        # Monotonic times (s) of recent connect attempts: shows the back-off at work.
        self.attempt_times: collections.deque[float] = collections.deque(maxlen=ATTEMPT_HISTORY)
        self.spool = queue
        self._status_payload = status_payload
        self._on_message = on_message
        self._subscriptions = list(subscriptions)
        self._connect_messages = connect_messages
        self._rng = rng or random.Random()
        self._tls_context = settings.tls.ssl_context() if settings.tls.enabled else None
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
        self._failure_log = RateLimitedLog(FAILURE_LOG_INTERVAL_S)

    # -- what the publisher uses (event-loop thread unless said otherwise) -------------------

    @property
    def live_client(self) -> aiomqtt.Client | None:
        """The connected client, or None while there is no usable connection."""
        return self._client if self.counters.connected else None

    @property
    def publishes_status(self) -> bool:
        """Whether this client publishes a retained status (replay's does not)."""
        return self._status_payload is not None

    def notify(self) -> None:
        """Wake the drain after rows were added to the outbox; safe from any thread."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def status(self, state: str) -> tuple[str, bytes]:
        """The retained status message for `state`: (topic, payload)."""
        assert self._status_payload is not None
        return status_topic(self.settings.topic_prefix), self._status_payload(state)

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
        will = None
        if self._status_payload is not None:
            will = aiomqtt.Will(*self.status("offline"), qos=1, retain=True)
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
                    await client.publish(*self.status("online"), qos=1, retain=True)
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
            if message.retain:
                self.counters.ignored_retained += 1
                log.warning(
                    "mqtt.retained_ignored",
                    topic=message.topic.value,
                    why="a retained command or trigger would be acted on at every connect",
                )
                continue
            if not data:
                self.counters.ignored_empty += 1
                log.info("mqtt.empty_ignored", topic=message.topic.value)
                continue
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
        await client.publish(*self.status(self._final_state), qos=1, retain=True)
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
