"""Inbound process data: ``{prefix}/{station}/process`` payloads, parsed reading by reading.

A payload is a JSON object ``{"samples": [reading, ...]}`` or one reading on its own (see
``monitor.events.inbound.ProcessReading``). Each reading is validated alone, so one bad
value costs that reading, not the batch; a payload that is not JSON, too long or neither form
is malformed as a whole. Nothing here is ever fatal: the caller counts what was skipped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from monitor.events import DEFAULT_TOPIC_PREFIX, STATION_PATTERN, MalformedMessageError
from monitor.events.inbound import MAX_PROCESS_SAMPLES, ProcessReading

# 100 readings of a few fields each stay far under this; the bound keeps json.loads away
# from pathological input.
MAX_PROCESS_PAYLOAD_BYTES = 64 * 1024


def station_from_process_topic(topic: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The station named by a process-data topic; MalformedMessageError for other topics."""
    head, sep, rest = topic.partition(f"{prefix}/")
    station, _, tail = rest.partition("/")
    if head or not sep or tail != "process" or not re.fullmatch(STATION_PATTERN, station):
        raise MalformedMessageError(f"not a process topic under {prefix!r}: {topic!r}")
    return station


def is_process_topic(topic: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> bool:
    """True for ``{prefix}/{station}/process`` (whatever the station's name)."""
    head, sep, rest = topic.partition(f"{prefix}/")
    return not head and bool(sep) and rest.count("/") == 1 and rest.endswith("/process")


def parse_process(payload: bytes) -> tuple[list[ProcessReading], int]:
    """The good readings of a payload and how many were skipped as bad; raises
    MalformedMessageError when the payload as a whole is not process data."""
    if len(payload) > MAX_PROCESS_PAYLOAD_BYTES:
        raise MalformedMessageError(
            f"process payload is {len(payload)} bytes, limit {MAX_PROCESS_PAYLOAD_BYTES}"
        )
    try:
        data: Any = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessageError(f"process payload is not JSON: {exc}") from exc
    if isinstance(data, dict) and "samples" in data:
        items = data["samples"]
        if not isinstance(items, list) or not items or len(items) > MAX_PROCESS_SAMPLES:
            raise MalformedMessageError(
                f"'samples' must be a list of 1 to {MAX_PROCESS_SAMPLES} readings"
            )
    elif isinstance(data, dict):
        items = [data]
    else:
        raise MalformedMessageError(f"expected a JSON object, got {type(data).__name__}")
    good: list[ProcessReading] = []
    for item in items:
        try:
            good.append(ProcessReading.model_validate(item))
        except ValidationError:
            continue
    return good, len(items) - len(good)
