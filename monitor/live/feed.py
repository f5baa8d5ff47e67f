"""The live views' broker link: subscribe, hand every message over, reconnect with capped,
jittered back-off (``monitor.backoff``) on any MQTT failure, for ever.

One loop for `weldmon watch` and the console. It reports each change of the link
(connecting / connected / disconnected with the wait before the next try) so a view can say
when it is itself cut off: a frozen figure must never be mistaken for a quiet line.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import aiomqtt

from monitor.backoff import backoff_delay
from monitor.live.state import ConnectionState

RECONNECT_MIN_S = 0.5  # first retry soon: a broker restart takes about a second
RECONNECT_MAX_S = 10.0  # an operator's screen or page should come back within seconds
KEEPALIVE_S = 10  # a silently dead link (no TCP reset) shows as disconnected within ~15 s
CONNECT_TIMEOUT_S = 5.0
SUBSCRIBE_QOS = 1  # results and alerts must not be lost between broker and view


@dataclass(frozen=True)
class BrokerOptions:
    """Where and how to connect."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls_context: ssl.SSLContext | None = None
    client_id: str | None = None  # None: a random id and a clean session

    @property
    def label(self) -> str:
        """``host:port`` as shown to the operator (``[v6]:port`` for an IPv6 address)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


LinkReport = Callable[[ConnectionState, float | None, str | None], None]
"""(state, seconds until the next try while disconnected, the error that cut the link)"""
MessageHandler = Callable[[str, bytes], Awaitable[None]]
"""(topic, payload); must not raise for anything a message carries"""


async def follow(
    options: BrokerOptions,
    subscriptions: Sequence[str],
    on_link: LinkReport,
    on_message: MessageHandler,
    rng: random.Random | None = None,
) -> NoReturn:
    """Subscribe to ``subscriptions`` (QoS 1) and await ``on_message`` for every message,
    reconnecting until cancelled. ``options.client_id`` set means a persistent session
    (``clean_session=False``): the broker queues QoS 1 messages while the view is away."""
    rng = rng or random.Random()
    failures = 0
    while True:
        on_link("connecting", None, None)
        try:
            async with aiomqtt.Client(
                options.host,
                options.port,
                identifier=options.client_id,
                clean_session=options.client_id is None,
                username=options.username,
                password=options.password,
                keepalive=KEEPALIVE_S,
                timeout=CONNECT_TIMEOUT_S,
                tls_context=options.tls_context,
            ) as client:
                for subscription in subscriptions:
                    await client.subscribe(subscription, qos=SUBSCRIBE_QOS)
                failures = 0
                on_link("connected", None, None)
                async for message in client.messages:
                    payload = message.payload
                    # paho hands over bytes; aiomqtt's type also allows str/number/None.
                    data = payload if isinstance(payload, bytes) else str(payload).encode()
                    await on_message(message.topic.value, data)
        except aiomqtt.MqttError as exc:
            delay = backoff_delay(failures, RECONNECT_MIN_S, RECONNECT_MAX_S, rng)
            failures += 1
            on_link("disconnected", delay, str(exc))
            await asyncio.sleep(delay)
