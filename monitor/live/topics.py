"""Which daemons a live view follows: ``--prefix`` patterns, and what a topic under them is.

A pattern is a plain topic prefix (``weldmon``, ``plant1/line3``) or one that ends in a
single-level wildcard (``plant1/+``), which follows every daemon one level below it
(``plant1/line3``, ``plant1/line4``, ...). Each daemon's prefix is the unit the views group
stations by, because the retained status (online/offline/stopped) is per daemon.

`weldmon watch` follows one plain prefix; the console any number of patterns. Both route
every topic through :func:`classify`, so both read the same topics as the same kind.

Pure: no I/O, so every rule is a unit test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from monitor.events import STATION_PATTERN

WELD_TOPIC_KINDS = ("start", "progress", "alert", "result")
RouteKind = Literal["status", "error", "weld", "shadow", "teach", "ignored"]


class PrefixError(ValueError):
    """A ``--prefix`` pattern the console cannot subscribe to."""


@dataclass(frozen=True)
class PrefixPattern:
    """One ``--prefix`` as given: ``levels`` are the fixed topic levels before the optional
    trailing ``+``."""

    text: str
    levels: tuple[str, ...]
    wildcard: bool

    @property
    def subscription(self) -> str:
        """The MQTT filter that receives everything under the pattern."""
        return f"{self.text}/#"

    def split(self, topic: str) -> tuple[str, str] | None:
        """``(daemon prefix, rest of the topic)`` if ``topic`` is under this pattern."""
        parts = topic.split("/")
        fixed = len(self.levels)
        taken = fixed + (1 if self.wildcard else 0)
        if len(parts) <= taken or tuple(parts[:fixed]) != self.levels:
            return None
        if self.wildcard and not parts[fixed]:
            return None
        return "/".join(parts[:taken]), "/".join(parts[taken:])


def parse_prefix(text: str) -> PrefixPattern:
    """Validate one ``--prefix``; raises PrefixError naming the problem."""
    if not text:
        raise PrefixError("--prefix must not be empty")
    if text.startswith("/") or text.endswith("/") or "//" in text:
        raise PrefixError(f"--prefix {text!r}: no leading, trailing or doubled '/'")
    if text.startswith("$"):
        raise PrefixError(f"--prefix {text!r}: '$' topics belong to the broker")
    if "#" in text or "\x00" in text:
        raise PrefixError(f"--prefix {text!r}: '#' is not allowed (use a trailing '/+')")
    levels = text.split("/")
    wildcard = levels[-1] == "+"
    fixed = tuple(levels[:-1] if wildcard else levels)
    if any("+" in level for level in fixed):
        raise PrefixError(f"--prefix {text!r}: '+' may only be the whole last level")
    return PrefixPattern(text=text, levels=fixed, wildcard=wildcard)


@dataclass(frozen=True)
class Route:
    """What one topic is: the daemon prefix it belongs to and the kind of message."""

    prefix: str
    kind: RouteKind
    station: str | None = None


def classify(patterns: list[PrefixPattern], topic: str) -> Route | None:
    """Route a topic under one of ``patterns`` (None: not under any).

    When patterns overlap (``plant1/+`` and ``plant1/line3/+``), the one giving the longest
    daemon prefix wins: it is the most specific statement the operator made.
    """
    best: tuple[str, str] | None = None
    for pattern in patterns:
        found = pattern.split(topic)
        if found is not None and (best is None or len(found[0]) > len(best[0])):
            best = found
    if best is None:
        return None
    prefix, rest = best
    if rest == "status":
        return Route(prefix, "status")
    if rest == "error":
        return Route(prefix, "error")
    if rest == "teach/reply":  # the daemon's answers to teach-in commands (console /teach)
        return Route(prefix, "teach")
    parts = rest.split("/")
    if (
        len(parts) == 3
        and parts[1] == "weld"
        and parts[2] in WELD_TOPIC_KINDS
        and re.fullmatch(STATION_PATTERN, parts[0])
    ):
        return Route(prefix, "weld", parts[0])
    if (
        len(parts) == 3
        and parts[1:] == ["shadow", "result"]
        and re.fullmatch(STATION_PATTERN, parts[0])
    ):
        return Route(prefix, "shadow", parts[0])
    # Triggers, commands, Home Assistant discovery, process data: inbound to the daemon or
    # not events at all; not counted as bad messages.
    return Route(prefix, "ignored")
