"""The welder's process data on its way into a pipeline's stations.

Live readings (``{prefix}/{station}/process``) carry UTC times: each is placed on the
station's sample clock through the stream epoch's frame-0 UTC, plus
``process.clock_offset_s`` for a power source whose clock is known to run off. Replay's
samples come already placed (the run's sensor log, its offset to the audio estimated from
the recording itself) and wait until the file's stream begins. Each station keeps its
samples in a `ProcessTrack` (one per stream epoch, like its clock), which its results are
summarised from; in ``current`` mode its segmenter gets them too. Bad samples are counted
and skipped, never fatal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from deploy.segment.current import CurrentSegmenter
from deploy.segment.process import ProcessSample, ProcessTrack
from deploy.segment.protocol import Segmenter
from monitor.events.inbound import ProcessReading


@dataclass
class ProcessCounters:
    """Monotonic counters of the process data one pipeline took in."""

    process_samples: int = 0  # placed on a station's clock
    process_samples_bad: int = 0  # skipped: unreadable, not finite, or not after the last
    process_samples_ignored: int = 0  # for an unknown station or before audio flows

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return asdict(self)


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


class ProcessFeed:
    """Places process data on the stations' clocks and counts what it had to skip."""

    def __init__(self, model_rate: int, clock_offset_s: float = 0.0) -> None:
        self.model_rate = model_rate
        self.clock_offset_s = clock_offset_s
        self.counters = ProcessCounters()
        self.queued: list[ProcessSample] = []

    def queue(self, samples: list[ProcessSample]) -> None:
        """Samples already on the stream's clock, for every station of the next epoch."""
        self.queued = sorted(samples, key=lambda s: s.index)

    def placed(self, readings: list[ProcessReading], epoch_utc: float) -> list[ProcessSample]:
        """Live readings on the clock of a stream whose frame 0 is at ``epoch_utc``."""
        shift = self.clock_offset_s - epoch_utc
        return [
            ProcessSample(
                round((r.t.timestamp() + shift) * self.model_rate),
                r.current_a,
                _or_nan(r.voltage_v),
                _or_nan(r.wire_feed_m_min),
                _or_nan(r.wire_consumed_m),
            )
            for r in readings
        ]

    def push(
        self, track: ProcessTrack, segmenter: Segmenter | None, samples: list[ProcessSample]
    ) -> int:
        """Samples into a station's track (and its current segmenter); returns how many were
        taken, the rest counted as bad."""
        taken = 0
        for sample in samples:
            if not track.push(sample):
                self.counters.process_samples_bad += 1
                continue
            taken += 1
            if isinstance(segmenter, CurrentSegmenter):
                segmenter.push(sample)
        self.counters.process_samples += taken
        return taken
