"""Capped exponential back-off with full jitter, for every retry loop of the monitor.

The wait after ``failures`` consecutive failed attempts is drawn uniformly between ``min_s``
and a ceiling that doubles per failure up to ``max_s`` ("full jitter" with a floor), so many
daemons restarting together do not hammer a broker, or a sound server, in lockstep. Pure
functions: the callers (MQTT publisher, capture thread, watch) own their loops and sleeps.
"""

from __future__ import annotations

import random

MAX_EXPONENT = 62  # 2**n stays a finite float after days of failures


def backoff_ceiling(failures: int, min_s: float, max_s: float) -> float:
    """Upper bound of the wait after ``failures`` consecutive failed attempts (0-based):
    ``min_s * 2**failures``, capped at ``max_s``."""
    return min(max_s, min_s * 2.0 ** min(failures, MAX_EXPONENT))


def backoff_delay(failures: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """The wait before the next attempt: uniform in [min_s, ceiling] (full jitter, floored)."""
    return rng.uniform(min_s, backoff_ceiling(failures, min_s, max_s))
