"""Dead-microphone detection: long runs of exact digital zeros on an open stream.

A live microphone is never exactly silent: its self-noise and the preamp's keep the lowest
bits moving. Exact zeros for long mean the capsule, cable or phantom power is gone (or the
input is muted), which would otherwise look like a very quiet, weld-free shift. Pure
bookkeeping: the daemon feeds blocks and publishes what comes back, once per episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class SilenceChange:
    """A channel started (alarm) or ended (cleared) a dead-microphone episode."""

    channel: int
    change: Literal["alarm", "cleared"]
    silent_s: float  # length of the silent run when the change was seen


class SilenceWatch:
    """Per channel: frames of exact zeros since the last non-zero sample."""

    def __init__(self, alarm_s: float | None) -> None:
        """`alarm_s`: run length (s) that raises the alarm; None: never."""
        self.alarm_s = alarm_s
        self._run: np.ndarray | None = None  # frames, per channel
        self._alarmed: np.ndarray | None = None
        self.episodes = 0

    def reset(self) -> None:
        """A new stream epoch: silence before it does not count (the stream was closed)."""
        self._run = self._alarmed = None

    def alarmed_channels(self) -> list[int]:
        """Channels in an episode now."""
        return [] if self._alarmed is None else np.flatnonzero(self._alarmed).tolist()

    def update(self, samples: np.ndarray, sample_rate: int) -> list[SilenceChange]:
        """Account one block ``[frames, channels]``; returns the episodes that began or ended."""
        if self.alarm_s is None or samples.size == 0:
            return []
        frames, channels = samples.shape
        if self._run is None or self._run.size != channels:
            self._run = np.zeros(channels, np.int64)
            self._alarmed = np.zeros(channels, bool)
        assert self._alarmed is not None
        # A live channel's last sample is almost never exactly 0: its trailing zero run is
        # then 0 and nothing else in the block matters, so only the other channels are scanned.
        quiet_end = np.flatnonzero(samples[-1] == 0)
        if quiet_end.size == 0 and not self._alarmed.any():
            self._run.fill(0)
            return []  # every channel sounds and none is in an episode: nothing can change
        before = self._run
        self._run = np.zeros(channels, np.int64)
        sound = np.ones(channels, bool)
        if quiet_end.size:
            nonzero = samples[:, quiet_end] != 0
            sound[quiet_end] = nonzero.any(axis=0)
            # Index of the first non-zero counted from the end = the trailing zero run.
            trailing = np.argmax(nonzero[::-1], axis=0)
            self._run[quiet_end] = np.where(sound[quiet_end], trailing, before[quiet_end] + frames)
        changes = []
        for c in np.flatnonzero(sound & self._alarmed):
            self._alarmed[c] = False
            changes.append(SilenceChange(int(c), "cleared", float(before[c]) / sample_rate))
        limit = self.alarm_s * sample_rate
        for c in np.flatnonzero((self._run >= limit) & ~self._alarmed):
            self._alarmed[c] = True
            self.episodes += 1
            changes.append(SilenceChange(int(c), "alarm", float(self._run[c]) / sample_rate))
        return changes
