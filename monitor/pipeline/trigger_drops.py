"""Triggers a pipeline's stations ignored, by reason (`TriggerIgnored`), summed over its
stream epochs (each epoch has new segmenters), and a warning line when new ones appear.

A start while a weld is open, a stop with no weld, a flood beyond the segmenter's queue or
a trigger still waiting when the stream ended makes no boundary: without this count the
welds it would have delimited vanish without a trace. The daemon exports the totals as
``weldmon_triggers_ignored_total{reason}``.
"""

from __future__ import annotations

from collections import Counter

import structlog

from deploy.segment.protocol import Segmenter
from monitor.backoff import RateLimitedLog
from monitor.segment.triggers import TriggerIgnored, TriggerSegmenter

log = structlog.get_logger(__name__)

LOG_INTERVAL_S = 10.0  # at most one triggers_ignored line per interval (a flood is one line)


class TriggerDrops:
    """The ignored triggers of one pipeline: `totals` by reason."""

    def __init__(self) -> None:
        self.totals: Counter[TriggerIgnored] = Counter()
        self._log = RateLimitedLog(LOG_INTERVAL_S)

    def collect(self, station: str, segmenter: Segmenter | None) -> None:
        """Count what `station`'s segmenter ignored since the last call (trigger mode only)."""
        if isinstance(segmenter, TriggerSegmenter):
            self.count(station, segmenter.take_ignored())

    def count(self, station: str, ignored: Counter[TriggerIgnored]) -> None:
        """Add `ignored` (by reason) to the totals; log it unless a line went out lately."""
        if not ignored:
            return
        self.totals.update(ignored)
        suppressed = self._log.allow()
        if suppressed is not None:
            log.warning(
                "triggers_ignored",
                station=station,
                ignored={str(r): n for r, n in ignored.items()},
                suppressed_lines=suppressed,
                totals={str(r): n for r, n in self.totals.items()},
            )

    def as_dict(self) -> dict[str, int]:
        """The totals as counters by name: ``triggers_ignored`` (all) and one per reason."""
        return {
            "triggers_ignored": self.totals.total(),
            **{f"triggers_ignored_{r}": self.totals[r] for r in TriggerIgnored},
        }
