"""The segmentation modes, declared once: the daemon's config, its events and both factories
use this enum (a tiny module on purpose: the event schema imports it, and the views import
the event schema)."""

from __future__ import annotations

from enum import StrEnum


class SegmentationMode(StrEnum):
    """How a weld's start and end are found."""

    CRACKLE = "crackle"  # the arc's crackle in the audio (deploy.segment.crackle): default
    ARC = "arc"  # a learned arc classifier on the audio (deploy.segment.arc)
    GATE = "gate"  # the arc gate: from the audio level (deploy.segment.gate)
    CURRENT = "current"  # the welder's arc current, from its process data (deploy.segment.current)
    TRIGGER = "trigger"  # start/stop messages from the robot over MQTT (monitor only)
    FILE = "file"  # one weld per file (replay)
