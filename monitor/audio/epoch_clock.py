"""When frame 0 of a capture stream existed, in UTC, from the callbacks' own timing.

A callback that delivers frames up to ``n`` (exclusive) runs no earlier than the moment frame
``n - 1`` became available, so ``callback wall time - n / rate`` is never earlier than frame
0's true time; scheduling delay only makes it later. The minimum over many callbacks therefore
converges on the true time from above, as soon as one callback arrives promptly.

Why not the ADC time PortAudio reports: through ALSA's ``pulse`` plugin the reported capture
delay was too large by 40-700 ms, varying per stream, which made every timestamp early.

The estimate is refined over the first ``refine_s`` of audio and then frozen: a device clock a
few ppm faster than the wall clock would otherwise pull the minimum ever earlier over a long
shift, and timestamps inside one epoch should not move once welds carry them.

Pure bookkeeping, no clock reads of its own; the capture callback feeds it. One writer thread
(the PortAudio callback); readers see a float that is replaced whole (atomic in CPython).
"""

from __future__ import annotations

DEFAULT_REFINE_S = 10.0  # s of audio over which callbacks refine the estimate: at 50 ms
# callbacks that is 200 chances for a prompt one; a weld needs min_weld_s (2 s) to start, so
# only the earliest welds of an epoch can carry a (slightly late) not yet settled estimate


class FrameZeroClock:
    """Estimates the UTC of frame 0 of one stream epoch as min(callback time - frames / rate)."""

    def __init__(self, sample_rate: int, refine_s: float = DEFAULT_REFINE_S) -> None:
        """`sample_rate` in Hz; `refine_s`: s of audio after which the estimate is frozen."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if refine_s < 0:
            raise ValueError(f"refine_s must be >= 0, got {refine_s}")
        self.sample_rate = sample_rate
        self._refine_frames = refine_s * sample_rate
        self._utc: float | None = None
        self._frozen = False
        self.observations = 0  # callbacks that took part in the estimate

    @property
    def utc(self) -> float | None:
        """UTC POSIX seconds of frame 0; None before the first observation."""
        return self._utc

    @property
    def settled(self) -> bool:
        """True once ``refine_s`` of audio was observed: the estimate no longer moves."""
        return self._frozen

    def observe(self, wall_utc: float, frames_delivered: int) -> None:
        """A callback ran at `wall_utc` (UTC POSIX s) having delivered `frames_delivered`
        frames in all, this callback's included. Ignored once the estimate is settled."""
        if self._frozen:
            return
        candidate = wall_utc - frames_delivered / self.sample_rate
        if self._utc is None or candidate < self._utc:
            self._utc = candidate
        self.observations += 1
        self._frozen = frames_delivered >= self._refine_frames
