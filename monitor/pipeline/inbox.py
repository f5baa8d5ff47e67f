"""The pipeline's inbox: inbound MQTT messages handed to whichever pipeline runs now.

The daemon replaces its pipeline when the sound device reopens at another rate, and has none
before the first audio; the inbox asks for the current one at every message, forwards
triggers, part announcements and process readings to it, or drops them while there is none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import structlog

from monitor.events.inbound import ProcessReading
from monitor.pipeline.core import Pipeline
from monitor.segment.triggers import TriggerIgnored

log = structlog.get_logger(__name__)


class PipelineInbox:
    """Forwards inbound messages to `current()`, the running pipeline (None before audio)."""

    def __init__(self, current: Callable[[], Pipeline | None]) -> None:
        self.current = current
        self.triggers_no_audio = 0  # triggers dropped: no pipeline (no station clock) yet
        self.process_samples_no_audio = 0  # process readings dropped for the same reason

    def counts(self) -> dict[str, int]:
        """What the inbox dropped itself, by the pipeline's counter names."""
        return {
            f"triggers_ignored_{TriggerIgnored.NO_AUDIO}": self.triggers_no_audio,
            "process_samples_no_audio": self.process_samples_no_audio,
        }

    def trigger(
        self, station: str, state: Literal["start", "stop"], at_utc: float, context: dict[str, str]
    ) -> bool:
        """A weld starts or stops at `at_utc`; False when it was ignored."""
        pipeline = self.current()
        if pipeline is None:
            self.triggers_no_audio += 1
            return False
        return pipeline.push_trigger(station, state, at_utc, context)

    def part(self, station: str, context: dict[str, str]) -> bool:
        """The station's next part; False before the first audio or for an unknown station."""
        pipeline = self.current()
        if pipeline is None:  # before the first audio: no station yet to hold it
            return False
        if pipeline.announce_part(station, context):
            log.info("part_announced", station=station, context=context)
            return True
        return False

    def process(self, station: str, readings: list[ProcessReading], bad: int) -> None:
        """The welder's process readings (`bad` were skipped); dropped before the first audio."""
        pipeline = self.current()
        if pipeline is None:
            self.process_samples_no_audio += len(readings)
            log.debug("process_before_audio", station=station, samples=len(readings))
            return
        pipeline.push_process(station, readings, bad)
