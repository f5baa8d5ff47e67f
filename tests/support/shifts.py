"""Shifts built from the real recordings: welds separated by idle room noise.

A "weld clip" is a recording's quiet head (idle room noise before the robot strikes the arc)
followed by a cut from its arc. A shift is clips back to back, ending idle, so the arc gate
sees one weld per clip. Used by the daemon and fault-injection tests (played into a
PulseAudio null sink) and by the soak benchmark (looped for hours without writing a file).

Which recordings: their quiet heads stay well under the gate's on-threshold whatever the
frame phase (checked offline over 50 ms of phases). A device stream starts at an arbitrary
point of the gate's frame grid, and a borderline idle head would make a test flaky, not
wrong. Mixed labels: lack_of_fusion (4, 5), overlap (6, 7), good_weld (17, 18, 22).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from deploy.audio import read_recording

RATE_HZ = 16_000  # the model's rate; a sink at this rate makes the capture bit-comparable
IDLE_S = 3.0  # idle gap before each weld, cut from the recording's own quiet head
WELD_CUT_S = (3.0, 10.0)  # part of each recording played: ~1.5 s idle, then ~5.5 s of arc
QUIET_HEAD_RUNS = (4, 6, 17, 5, 22, 7, 18)  # manifest rows whose heads are safely idle


def weld_clip(
    flac: Path,
    rate: int = RATE_HZ,
    idle_s: float = IDLE_S,
    cut_s: tuple[float, float] = WELD_CUT_S,
) -> np.ndarray:
    """One weld with the idle gap before it: float32 mono ``[idle_s + cut length]``."""
    audio = read_recording(flac, rate).samples[0]
    idle = audio[: int(idle_s * rate)]
    weld = audio[int(cut_s[0] * rate) : int(cut_s[1] * rate)]
    return np.concatenate([idle, weld]).astype(np.float32)


def idle_tail(flac: Path, rate: int = RATE_HZ, idle_s: float = IDLE_S) -> np.ndarray:
    """Idle room noise (the recording's quiet head) to end a shift on, so the last weld ends."""
    return read_recording(flac, rate).samples[0][: int(idle_s * rate)].astype(np.float32)


def build_shift(
    flacs: Sequence[Path],
    rate: int = RATE_HZ,
    idle_s: float = IDLE_S,
    cut_s: tuple[float, float] = WELD_CUT_S,
) -> np.ndarray:
    """One weld per file, each after an idle gap; ends idle. float32 mono ``[frames]``."""
    if not flacs:
        raise ValueError("a shift needs at least one recording")
    parts = [weld_clip(f, rate, idle_s, cut_s) for f in flacs]
    parts.append(idle_tail(flacs[-1], rate, idle_s))
    return np.concatenate(parts)


def per_channel_layout(channels: Sequence[np.ndarray]) -> np.ndarray:
    """Mono shifts side by side as ``[frames, channels]``, the shorter ones padded with zeros
    (digital silence, which the gate ignores outside a weld)."""
    frames = max(c.size for c in channels)
    out = np.zeros((frames, len(channels)), np.float32)
    for i, c in enumerate(channels):
        out[: c.size, i] = c
    return out


def as_frames(mono: np.ndarray) -> np.ndarray:
    """A mono shift as ``[frames, 1]`` (what a 1-channel sink or source plays)."""
    return np.ascontiguousarray(mono[:, None], dtype=np.float32)


class LoopedShift:
    """An arbitrarily long shift made by cycling through weld clips, produced block by block
    so hours of audio never exist in memory or on disk at once.

    Args:
        clips: mono weld clips (`weld_clip`), played in order, then again from the first.
    """

    def __init__(self, clips: Sequence[np.ndarray]) -> None:
        if not clips:
            raise ValueError("a looped shift needs at least one clip")
        self._cycle = np.concatenate(list(clips)).astype(np.float32)
        self.welds_per_cycle = len(clips)  # each clip is one weld

    @property
    def cycle_frames(self) -> int:
        """Frames in one pass over every clip."""
        return int(self._cycle.size)

    def blocks(self, block_frames: int, total_frames: int) -> Iterator[np.ndarray]:
        """Consecutive ``[<=block_frames, 1]`` float32 blocks, ``total_frames`` in all; each is
        a fresh array the caller owns (the pipeline keeps references to what it is given)."""
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        position = 0
        emitted = 0
        while emitted < total_frames:
            n = min(block_frames, total_frames - emitted)
            out = np.empty((n, 1), np.float32)
            filled = 0
            while filled < n:
                take = min(n - filled, self.cycle_frames - position)
                out[filled : filled + take, 0] = self._cycle[position : position + take]
                filled += take
                position = (position + take) % self.cycle_frames
            emitted += n
            yield out
