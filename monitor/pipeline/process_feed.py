"""The welder's process data on its way into a pipeline's stations.

Live readings (``{prefix}/{station}/process``) carry UTC times: each is placed on the
station's sample clock through the stream epoch's frame-0 UTC, plus
``process.clock_offset_s`` for a power source whose clock is known to run off. Replay's
samples come already placed (the run's sensor log, its offset to the audio estimated from
the recording itself) and wait until the file's stream begins. Each station keeps its
samples in a `ProcessTrack` (one per stream epoch, like its clock), which its results are
summarised from; in ``current`` mode its segmenter gets them too. Bad samples are counted
and skipped, never fatal.

A live reading dated more than MAX_AHEAD_S ahead of the daemon's wall clock is refused
(counted, logged at a limited rate): the track keeps time order, so one reading from the
future would otherwise turn every real reading after it into "not after the last" and switch
the station's process data (and, in ``current`` mode, its welds) off until the clock caught
up with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import structlog

from deploy.segment.current import CurrentSegmenter
from deploy.segment.process import ProcessSample, ProcessTrack
from deploy.segment.protocol import Segmenter
from monitor.backoff import RateLimitedLog
from monitor.events.inbound import ProcessReading

log = structlog.get_logger(__name__)

# How far (s) a reading's time, ``process.clock_offset_s`` applied, may lie ahead of the
# daemon's wall clock. Sources on NTP are milliseconds apart and the network only delays;
# a few seconds leave room for a source that is not synchronised, and bound how long one
# reading too far ahead can hold back the real ones after it.
MAX_AHEAD_S = 5.0
LOG_INTERVAL_S = 10.0  # at most one line per interval for each kind of skipped sample


@dataclass
class ProcessCounters:
    """Monotonic counters of the process data one pipeline took in."""

    process_samples: int = 0  # placed on a station's clock
    process_samples_bad: int = 0  # skipped: unreadable, not finite, or not after the last
    process_samples_ignored: int = 0  # for an unknown station or before audio flows
    process_samples_ahead: int = 0  # dated more than MAX_AHEAD_S ahead of the wall clock
    process_samples_over_cap: int = 0  # dropped from a full track (MAX_SAMPLES_PER_S)

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
        self._ahead_log = RateLimitedLog(LOG_INTERVAL_S)
        self._over_cap_log = RateLimitedLog(LOG_INTERVAL_S)

    def not_ahead(
        self, station: str, readings: list[ProcessReading], now_utc: float | None = None
    ) -> list[ProcessReading]:
        """The readings not dated more than MAX_AHEAD_S ahead of `now_utc` (default: the wall
        clock); the others are counted and logged."""
        now_utc = time.time() if now_utc is None else now_utc
        limit = now_utc + MAX_AHEAD_S - self.clock_offset_s
        kept = [r for r in readings if r.t.timestamp() <= limit]
        ahead = len(readings) - len(kept)
        if ahead:
            self.counters.process_samples_ahead += ahead
            suppressed = self._ahead_log.allow()
            if suppressed is not None:
                latest = max(r.t.timestamp() for r in readings)
                log.warning(
                    "process_sample_ahead",
                    station=station,
                    samples=ahead,
                    ahead_s=round(latest + self.clock_offset_s - now_utc, 3),
                    limit_s=MAX_AHEAD_S,
                    suppressed=suppressed,
                    total=self.counters.process_samples_ahead,
                )
        return kept

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
        taken, over_cap = 0, track.over_cap
        for sample in samples:
            if not track.push(sample):
                self.counters.process_samples_bad += 1
                continue
            taken += 1
            if isinstance(segmenter, CurrentSegmenter):
                segmenter.push(sample)
        self.counters.process_samples += taken
        if track.over_cap > over_cap:
            self.counters.process_samples_over_cap += track.over_cap - over_cap
            suppressed = self._over_cap_log.allow()
            if suppressed is not None:
                log.warning(
                    "process_samples_over_cap",
                    dropped=track.over_cap - over_cap,
                    held=len(track),
                    cap=track.max_samples,
                    suppressed=suppressed,
                    total=self.counters.process_samples_over_cap,
                )
        return taken
