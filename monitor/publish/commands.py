"""Inbound MQTT: the command router the publisher hands every received message to.

These messages come in, each on its own topic:

- ``{prefix}/cmd/reload``: reload the model (empty, the word ``reload``, or a JSON object
  with an optional ``request_id`` echoed in the log);
- ``{prefix}/cmd/promote`` and ``{prefix}/cmd/rollback``: the shadow model becomes production,
  or the previous production model comes back (`monitor.events.shadow.ModelCommand`;
  `monitor/promote.py`); who may send them is the broker's ACL, as for reload;
- ``{prefix}/cmd/teach``: a station's teach-in (`monitor.events.teach.TeachCommand`;
  `monitor/teach`), the broker's ACL again;
- Home Assistant's birth message on ``{discovery_prefix}/status``: re-send the discovery
  configs (`discovery`, also sent at every connect);
- ``{prefix}/{station}/trigger`` (trigger mode): a weld starts or stops at arrival time; a
  start may carry part context (`TriggerMessage`);
- ``{prefix}/{station}/part`` (any mode): the station's next part (`PartMessage`), carried by
  its next weld;
- ``{prefix}/{station}/process`` (unless ``process.enabled`` is false): the welder's process
  data (`monitor.publish.process_messages`). Like every inbound message, a retained one never
  gets here (the publisher drops it: it would come back at every connect as if new).

The router parses and dispatches to handlers the daemon gives it; a malformed message is
logged and reported to ``malformed(kind)`` (the metric counts it) and goes no further.
Called on the event loop; handlers must not block.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from pydantic import Field, ValidationError

from deploy.strict_model import StrictModel
from monitor.events import (
    DEFAULT_TOPIC_PREFIX,
    STATION_PATTERN,
    MalformedMessageError,
    first_errors,
)
from monitor.events.inbound import (
    PartMessage,
    ProcessReading,
    TriggerMessage,
    part_subscription,
    process_subscription,
    trigger_subscription,
)
from monitor.events.shadow import (
    MODEL_ACTIONS,
    ModelAction,
    ModelCommand,
    model_command_topic,
    parse_model_command,
)
from monitor.events.teach import TeachCommand, parse_teach_command, teach_command_topic
from monitor.publish.homeassistant import (
    Discovery,
    HomeAssistantConfig,
    discovery_messages,
    is_homeassistant_birth,
)
from monitor.publish.process_messages import (
    is_process_topic,
    parse_process,
    station_from_process_topic,
)
from weldmon import __version__

# An inbound trigger or part announcement is a word or a small JSON object (16 context keys of
# up to 128 characters fit); anything longer is not one of ours, and the bound keeps
# json.loads away from pathological nesting.
MAX_TRIGGER_PAYLOAD_BYTES = 4096
RELOAD_WORD = b"reload"
MAX_COMMAND_PAYLOAD_BYTES = 1024  # a command is a word or a tiny JSON object

MalformedKind = Literal["command", "trigger", "part", "process"]

log = structlog.get_logger(__name__)


def reload_topic(prefix: str) -> str:
    """The command topic that asks for a reload."""
    return f"{prefix}/cmd/reload"


class ReloadCommand(StrictModel):
    """``{prefix}/cmd/reload`` payload: empty, the word ``reload``, or a JSON object with an
    optional ``request_id`` echoed in the log."""

    request_id: str | None = Field(None, min_length=1, max_length=128)


def parse_reload_command(payload: bytes) -> ReloadCommand:
    """Parse a reload command; raises MalformedMessageError for anything else."""
    if len(payload) > MAX_COMMAND_PAYLOAD_BYTES:
        raise MalformedMessageError(f"command payload longer than {MAX_COMMAND_PAYLOAD_BYTES} B")
    text = payload.strip()
    if not text or text == RELOAD_WORD:
        return ReloadCommand()
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: 1 KiB of '[' nests deeper than json.loads recurses
        raise MalformedMessageError(f"not 'reload' or a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedMessageError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return ReloadCommand.model_validate(data)
    except ValidationError as exc:
        raise MalformedMessageError(f"bad reload command: {exc.errors()[0]['msg']}") from exc


def station_from_topic(
    topic: str, prefix: str = DEFAULT_TOPIC_PREFIX, leaf: str = "trigger"
) -> str:
    """The station named by ``{prefix}/{station}/{leaf}``; raises MalformedMessageError for
    other topics."""
    head, sep, rest = topic.partition(f"{prefix}/")
    station, _, tail = rest.partition("/")
    if head or not sep or tail != leaf or not re.fullmatch(STATION_PATTERN, station):
        raise MalformedMessageError(f"not a {leaf} topic under {prefix!r}: {topic!r}")
    return station


def station_from_trigger_topic(topic: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The station named by a trigger topic; raises MalformedMessageError for other topics."""
    return station_from_topic(topic, prefix, "trigger")


def _bounded_text(payload: bytes, what: str) -> str:
    if len(payload) > MAX_TRIGGER_PAYLOAD_BYTES:
        raise MalformedMessageError(
            f"{what} payload is {len(payload)} bytes, limit {MAX_TRIGGER_PAYLOAD_BYTES}"
        )
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise MalformedMessageError(f"{what} payload is not UTF-8") from exc


def parse_part(payload: bytes) -> PartMessage:
    """Parse a part announcement: a JSON object with ``part_id`` (and more context), or the
    plain part id (a barcode); anything else raises MalformedMessageError."""
    text = _bounded_text(payload, "part")
    if not text:
        raise MalformedMessageError("part payload is empty")
    if text.startswith("{"):
        try:
            data: Any = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise MalformedMessageError(f"part payload is not valid JSON: {text[:80]!r}") from exc
    else:
        data = {"part_id": text}
    try:
        return PartMessage.model_validate(data)
    except ValidationError as exc:
        raise MalformedMessageError(f"bad part message: {first_errors(exc)}") from exc


def parse_trigger(payload: bytes) -> TriggerMessage:
    """Parse an inbound trigger payload; anything else raises MalformedMessageError."""
    text = _bounded_text(payload, "trigger")
    if text.lower() in ("start", "stop"):
        return TriggerMessage(state=text.lower())
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessageError(
            f"trigger payload is neither start/stop nor JSON: {text[:80]!r}"
        ) from exc
    if isinstance(data, str) and data.strip().lower() in ("start", "stop"):
        return TriggerMessage(state=data.strip().lower())
    try:
        return TriggerMessage.model_validate(data)
    except ValidationError as exc:
        raise MalformedMessageError(f"bad trigger message: {first_errors(exc)}") from exc


@dataclass(frozen=True)
class CommandHandlers:
    """What the router calls; all on the event loop."""

    reload: Callable[[str], None]  # the request's origin, for the log
    # (station, "start"|"stop", arrival UTC, part context) -> False when it was ignored
    trigger: Callable[[str, Literal["start", "stop"], float, dict[str, str]], bool]
    # (station, part context) -> False when the station is unknown
    part: Callable[[str, dict[str, str]], bool]
    homeassistant_birth: Callable[[], None]  # Home Assistant restarted: send discovery again
    malformed: Callable[[MalformedKind], None]  # a message that is none of ours was dropped
    # (station, the payload's good readings, how many it held that were skipped as bad)
    process: Callable[[str, list[ProcessReading], int], None] | None = None
    # ("promote" | "rollback", the command) -> None; None: the topics are not subscribed
    model: Callable[[ModelAction, ModelCommand], None] | None = None
    # a ``{prefix}/cmd/teach`` command -> None; None: the topic is not subscribed
    teach: Callable[[TeachCommand], None] | None = None


class CommandRouter:
    """Dispatches inbound messages by topic; ``subscriptions`` are the filters it serves."""

    def __init__(
        self,
        prefix: str,
        homeassistant: HomeAssistantConfig,
        stations: list[str],
        handlers: CommandHandlers,
        *,
        triggers: bool,
        process: bool = False,
    ) -> None:
        self.prefix = prefix
        self.homeassistant = homeassistant
        self.stations = stations
        self.handlers = handlers
        self.subscriptions = [trigger_subscription(prefix)] if triggers else []
        self.subscriptions += [part_subscription(prefix), reload_topic(prefix)]
        if homeassistant.enabled:
            self.subscriptions.append(homeassistant.birth_topic)
        if process and handlers.process is not None:
            self.subscriptions.append(process_subscription(prefix))
        self._model_topics: dict[str, ModelAction] = {}
        if handlers.model is not None:
            for action in MODEL_ACTIONS:
                topic = model_command_topic(prefix, action)
                self._model_topics[topic] = action
                self.subscriptions.append(topic)
        if handlers.teach is not None:
            self.subscriptions.append(teach_command_topic(prefix))

    def discovery(self) -> list[Discovery]:
        """Home Assistant's discovery configs for the stations (empty when disabled): sent at
        every connect and again when Home Assistant announces itself."""
        return discovery_messages(self.homeassistant, self.prefix, self.stations, __version__)

    def __call__(self, topic: str, payload: bytes) -> None:
        """Handle one inbound message (the publisher's ``on_message``)."""
        if topic == reload_topic(self.prefix):
            try:
                command = parse_reload_command(payload)
            except MalformedMessageError as exc:
                self._malformed("command", topic, exc)
                return
            self.handlers.reload(f"mqtt request_id={command.request_id}")
            return
        action = self._model_topics.get(topic)
        if action is not None and self.handlers.model is not None:
            try:
                model_command = parse_model_command(payload)
            except MalformedMessageError as exc:
                self._malformed("command", topic, exc)
                return
            self.handlers.model(action, model_command)
            return
        if self.handlers.teach is not None and topic == teach_command_topic(self.prefix):
            try:
                teach_command = parse_teach_command(payload)
            except MalformedMessageError as exc:
                self._malformed("command", topic, exc)
                return
            self.handlers.teach(teach_command)
            return
        ha = self.homeassistant
        if ha.enabled and topic == ha.birth_topic:
            if is_homeassistant_birth(ha, topic, payload):
                self.handlers.homeassistant_birth()
            return
        if topic.endswith("/part"):
            try:
                station = station_from_topic(topic, self.prefix, "part")
                part = parse_part(payload)
            except MalformedMessageError as exc:
                self._malformed("part", topic, exc)
                return
            if not self.handlers.part(station, part.context_fields()):
                log.warning("part_ignored", station=station, part_id=part.part_id)
            return
        if self.handlers.process is not None and is_process_topic(topic, self.prefix):
            self._process(topic, payload)
            return
        try:
            station = station_from_trigger_topic(topic, self.prefix)
            trigger = parse_trigger(payload)
        except MalformedMessageError as exc:
            self._malformed("trigger", topic, exc)
            return
        context = trigger.context_fields()
        if not self.handlers.trigger(station, trigger.state, time.time(), context):
            log.warning("trigger_ignored", station=station, state=trigger.state)

    def _process(self, topic: str, payload: bytes) -> None:
        assert self.handlers.process is not None
        try:
            station = station_from_process_topic(topic, self.prefix)
            readings, bad = parse_process(payload)
        except MalformedMessageError as exc:
            self._malformed("process", topic, exc)
            return
        self.handlers.process(station, readings, bad)

    def _malformed(self, kind: MalformedKind, topic: str, exc: MalformedMessageError) -> None:
        self.handlers.malformed(kind)
        log.warning(f"malformed_{kind}", topic=topic, error=str(exc))
