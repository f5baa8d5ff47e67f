"""One request to a running daemon over MQTT, and its answer: what `weldmon model
promote|rollback` and `weldmon teach` do from an operator's shell.

The command goes to the daemon's command topic; the answer is the first message on the reply
topic that parses and carries the command's ``request_id`` (other operators' answers, and
anything malformed, are passed over). Subscribed before publishing, so an answer cannot be
missed. aiomqtt is imported inside, as by every command-line client here: the CLI's start-up
stays light for the commands that never touch a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Callable
from typing import Protocol, TypeVar

from deploy.errors import WeldmonError
from monitor.events import MalformedMessageError
from monitor.publish.settings import MqttConfig

COMMAND_QOS = 1  # a command and its answer are each delivered at least once


def add_daemon_options(
    parser: argparse.ArgumentParser, *, by_help: str, default_timeout_s: float
) -> None:
    """The options every command sent to a running daemon takes: its config (where the
    broker, credentials and prefix come from), who asks, and how long to wait."""
    parser.add_argument(
        "--daemon",
        required=True,
        metavar="CONFIG",
        help="the running daemon's config file (its broker, credentials and prefix)",
    )
    parser.add_argument("--by", default=None, help=f"who asks ({by_help}); default: $USER")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=default_timeout_s,
        help=f"how long to wait for the daemon's answer (default {default_timeout_s:g} s)",
    )


class Answer(Protocol):
    """What a daemon's answer has in common: the request it answers."""

    @property  # read-only: the answers are frozen models
    def request_id(self) -> str | None: ...


A = TypeVar("A", bound=Answer)


async def ask_daemon(
    mqtt: MqttConfig,
    *,
    command_topic: str,
    payload: str,
    reply_topic: str,
    parse: Callable[[bytes], A],
    request_id: str,
    timeout_s: float,
    tag: str,
) -> A | None:
    """Publish `payload` on `command_topic` and return the daemon's answer to `request_id`
    from `reply_topic` (None after `timeout_s`); WeldmonError says why the broker cannot be
    used. `tag` names the client (``<client_id>-<tag>-<random>``) in the broker's log."""
    import aiomqtt

    client_id = f"{mqtt.client_id[:40]}-{tag}-{uuid.uuid4().hex[:8]}"
    tls = mqtt.tls.ssl_context() if mqtt.tls.enabled else None
    password = mqtt.password.get_secret_value() if mqtt.password is not None else None
    try:
        async with aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            identifier=client_id,
            username=mqtt.username,
            password=password,
            timeout=mqtt.connect_timeout_s,
            tls_context=tls,
        ) as client:
            await client.subscribe(reply_topic, qos=COMMAND_QOS)
            await client.publish(command_topic, payload, qos=COMMAND_QOS)
            async with asyncio.timeout(timeout_s):
                async for message in client.messages:
                    if not isinstance(message.payload, bytes):
                        continue
                    try:
                        answer = parse(message.payload)
                    except MalformedMessageError:
                        continue
                    if answer.request_id == request_id:
                        return answer
    except TimeoutError:
        return None
    except aiomqtt.MqttError as exc:
        raise WeldmonError(f"broker {mqtt.host}:{mqtt.port}: {exc}") from exc
    return None
