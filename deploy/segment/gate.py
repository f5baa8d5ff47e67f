"""Arc gate: finds weld start and end in a continuous audio stream, block by block.

One ``GateSegmenter`` per station. It owns a little state (a partial frame, the last few frame
powers for smoothing, the noise-floor history and the gate state) and nothing else; the caller
owns the audio and keeps ``lookback_samples`` of history so it can cut windows from a start
that lies in the past. Results do not depend on how the stream is cut into blocks:
``segment_recording`` runs the very same segmenter over a whole array.

How it decides (see docs/segmentation.md for the data behind the defaults):

1. Level: power in 2-8 kHz (where a MAG arc stands out most from the robot's idle hum) per
   ``frame_s`` frame, smoothed by a centred moving mean of ``smooth_s`` (a frame is decided
   once the next half-span of frames has arrived).
2. Noise floor: the minimum smoothed level over the last ``floor_window_s`` of frames spent
   outside a weld; thresholds are relative to it, so the gate is indifferent to microphone
   gain and distance. Frames whose smoothing span holds digital silence (under
   ``SILENCE_DB``: zeros from a muted or not yet started stream) are left out of it
   (``silent_frames``).
3. Candidate: opens when the level rises ``on_db`` above the floor, stays while it is at least
   ``off_db`` above (hysteresis), is discarded after ``hangover_s`` off (``discarded_bursts``).
4. Weld: the weld's own level is the median of its latest ``ref_s`` of on-frames. Once that is
   ``on_db`` above the floor and the level has stayed within ``edge_db`` of it for
   ``min_weld_s``, a ``start`` boundary is emitted at the first frame within ``edge_db`` of
   it (minus ``pre_roll_s``): the quieter wire-feed creep before ignition is skipped.
5. A weld ends (``end`` boundary, at the last on-sample) once the level stayed off (below
   ``off_db`` over the floor or ``edge_db`` under the weld's level) for ``hangover_s``, or is
   cut at ``max_weld_s`` (``forced_ends``); after a forced end the level must fall below
   ``off_db`` before a new weld may start. The hang-over is counted up to the last raw frame
   the smoothed level has seen (its look-ahead included), so an end is reported as soon as
   ``hangover_s`` of audio has followed the last on-sample.

Signal maths per block is vectorised (``deploy.segment.levels``: one FFT per frame with the window
and band weights built once); the state machine steps once per frame (20 per second at the
defaults) in plain Python floats, which costs less than numpy calls would.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from enum import Enum

import numpy as np
from pydantic import Field, model_validator

from deploy.segment.framing import FrameGrid
from deploy.segment.levels import LEVEL_FLOOR_DB, band_meter
from deploy.segment.protocol import (
    Boundary,
    Frames,
    SegmentationError,
    Segmenter,
    pair_boundaries,
)
from deploy.strict_model import StrictModel

# Band power (dBFS) under which a frame counts as digital silence. Zeros from a muted input,
# a stream that has not started or a filled gap read LEVEL_FLOOR_DB (-120); at 16 bits a frame
# that is not nearly all zeros reads -101 or more. The quietest idle frame of the shared
# recordings reads -91.7 dBFS in the gate's band, -111.7 after the 20 dB attenuation the
# robustness bench applies, so -115 keeps every real room out of it. Silent frames are no
# room noise: fed to the noise floor they would drag it to -120 dBFS and make ordinary idle
# noise look like an arc.
SILENCE_DB = -115.0
_SILENCE_POWER = 10.0 ** (SILENCE_DB / 10.0)
_FLOOR_POWER = 10.0 ** (LEVEL_FLOOR_DB / 10.0)


class GateParams(StrictModel):
    """Arc-gate settings. Defaults were chosen on the 23 shared recordings (docs/segmentation.md):
    round numbers, tuned by hand on few parameters, with margins on both sides."""

    band_low_hz: float = Field(
        2000.0,
        ge=0.0,
        description="Lower edge of the level band (Hz). In 2-8 kHz the arc's median is 20-39 dB "
        "over the idle floor in every recording and the wire-feed creep before ignition stays "
        "13+ dB below the arc; below 1 kHz idle machine hum is as loud as the arc in half of "
        "the recordings.",
    )
    band_high_hz: float = Field(
        8000.0,
        gt=0.0,
        description="Upper edge of the level band (Hz); capped at Nyquist (8 kHz at 16 kHz).",
    )
    frame_s: float = Field(
        0.05,
        gt=0.0,
        le=0.5,
        description="Frame length of the level (s): the gate's time resolution; 50 ms is 1/10 "
        "of the 0.5 s accuracy target and keeps the FFT at 800 points.",
    )
    smooth_s: float = Field(
        0.25,
        ge=0.0,
        description="Centred moving-mean span of the frame power (s). Short-circuit MAG arcs "
        "dip by 20 dB for 50-100 ms many times a second; 0.25 s averages those dips out. "
        "Rounded to an odd number of frames; delays decisions by half of it.",
    )
    floor_window_s: float = Field(
        10.0,
        gt=0.0,
        description="Noise-floor memory (s of frames outside welds): long enough to span the "
        "quiet between welds, short enough to follow a changed room within seconds.",
    )
    on_db: float = Field(
        16.0,
        gt=0.0,
        description="Level above the noise floor (dB) that opens a candidate, and that the "
        "weld's own (median) level must reach to count as a weld. Arc medians are 20.5+ dB "
        "over the floor in every recording; post-weld idle (fume extraction) up to 12 dB.",
    )
    off_db: float = Field(
        6.0,
        gt=0.0,
        description="Level above the noise floor (dB) below which the arc counts as off "
        "whatever the weld's own level (hysteresis: lower than on_db so arc flicker does not "
        "chatter; a few dB above the floor's own wander).",
    )
    edge_db: float = Field(
        10.0,
        gt=0.0,
        description="How far below the weld's own level (median of its latest ref_s of "
        "on-frames) the arc still counts as on (dB). Places start and end on the arc itself: "
        "the wire-feed creep before ignition and post-weld noise sit 13-24 dB below the arc's "
        "median, the arc's own 10th percentile at most 7 dB below it.",
    )
    ref_s: float = Field(
        1.0,
        gt=0.0,
        description="Span of on-frames whose median is the weld's own level (s): long enough "
        "to average the arc's flicker, short enough to follow a slow change in the weld.",
    )
    min_weld_s: float = Field(
        2.0,
        gt=0.0,
        description="Shortest weld (s): shorter bursts (ignition clicks, hammer blows, a "
        "dropped part) are discarded. Must exceed the ~1.1 s wire-feed creep before ignition "
        "plus ref_s, so the weld's level is learnt from the arc. Welds recorded: 11-28 s.",
    )
    hangover_s: float = Field(
        0.5,
        ge=0.0,
        description="How long the level must stay off before a weld ends (s), counted to the "
        "end of the smoothing look-ahead, so it is also the delay from a weld's last on-sample "
        "to its end being decided: bridges arc dropouts and re-ignitions (burn-through runs "
        "drop out for up to ~0.3 s).",
    )
    pre_roll_s: float = Field(
        0.0,
        ge=0.0,
        description="Start boundary this far before the first on-sample (s), so that windows "
        "cut from the start include the ignition. 0 keeps the start on the arc itself.",
    )
    max_weld_s: float = Field(
        600.0,
        gt=0.0,
        description="Longest weld (s) before the gate forces an end: a stuck-on level (new "
        "noise source) cannot hold a weld open forever. 20x the longest recorded weld.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> GateParams:
        if self.off_db > self.on_db:
            raise ValueError(f"off_db ({self.off_db}) must not exceed on_db ({self.on_db})")
        if self.band_low_hz >= self.band_high_hz:
            raise ValueError(
                f"band_low_hz ({self.band_low_hz}) must be below band_high_hz ({self.band_high_hz})"
            )
        if self.min_weld_s > self.max_weld_s:
            raise ValueError(
                f"min_weld_s ({self.min_weld_s}) must not exceed max_weld_s ({self.max_weld_s})"
            )
        return self


class _SlidingMin:
    """Minimum of the last ``size`` values pushed, in O(1) amortised per push.

    Hand-written (numpy has no streaming form of it): ``min()`` over the 200-frame floor
    history on every frame was a large part of the gate's cost (docs/benchmarks.md,
    "Monitor: segmentation cost")."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pushed = 0
        self._candidates: deque[tuple[int, float]] = deque()  # (push number, value), rising

    def __bool__(self) -> bool:
        return bool(self._candidates)

    def push(self, value: float) -> None:
        """Add a value; the oldest falls out once ``size`` are held."""
        cands = self._candidates
        while cands and cands[-1][1] >= value:
            cands.pop()
        cands.append((self._pushed, value))
        self._pushed += 1
        if cands[0][0] <= self._pushed - 1 - self.size:
            cands.popleft()

    def min(self) -> float:
        """Smallest of the values held (there must be one)."""
        return self._candidates[0][1]


class _State(Enum):
    IDLE = "idle"  # no arc; frames feed the noise floor
    CANDIDATE = "candidate"  # level went on, not yet long enough to be a weld
    WELD = "weld"  # start emitted, end not yet
    LOCKOUT = "lockout"  # after a forced end: waits for the level to fall below off_db


class GateSegmenter(Segmenter):
    """Streaming arc gate for one station; see the module docstring for the rules.

    ``process`` takes consecutive blocks of mono float32 samples at ``sample_rate``; each
    block's ``start_index`` must continue the previous one (a gap re-anchors the frame grid
    and is counted in ``gap_samples``; going backwards raises ``SegmentationError``).
    """

    def __init__(self, params: GateParams, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise SegmentationError(f"sample_rate must be positive, got {sample_rate}")
        self.params = params
        self.sample_rate = sample_rate
        self._frame_len = max(1, round(params.frame_s * sample_rate))
        frame_s = self._frame_len / sample_rate
        self._half_smooth = max(0, round(params.smooth_s / frame_s) // 2)
        band_high = min(params.band_high_hz, sample_rate / 2.0 + 1.0)
        self._meter = band_meter(self._frame_len, sample_rate, params.band_low_hz, band_high)
        self._pre_roll = round(params.pre_roll_s * sample_rate)
        self._min_weld = round(params.min_weld_s * sample_rate)
        self._hangover = round(params.hangover_s * sample_rate)
        # The smoothed level of a frame already holds the raw frames of the next half-span, so
        # the hang-over is counted to the end of those: the end is decided as soon as
        # ``hangover_s`` of audio after the last on-frame has arrived, not half a span later.
        self._hangover_decided = max(0, self._hangover - self._half_smooth * self._frame_len)
        self._max_weld = round(params.max_weld_s * sample_rate)
        floor_frames = max(1, round(params.floor_window_s / frame_s))
        self._floor_history = _SlidingMin(floor_frames)
        # (frame start, level) of the open candidate, and the weld's latest on-frame levels.
        self._candidate: deque[tuple[int, float]] = deque(maxlen=self._candidate_frames())
        self._weld_levels: deque[float] = deque(maxlen=max(1, round(params.ref_s / frame_s)))

        self._grid = FrameGrid(self._frame_len)
        # Frame powers waiting for their right-hand smoothing neighbours, and the left ones.
        self._powers: list[float] = []
        self._left: deque[float] = deque(maxlen=self._half_smooth)
        self._left_quietest = math.inf  # smallest power in _left (kept with it)

        self._state = _State.IDLE
        self._first_on = 0  # first sample of the first on-frame of the current candidate/weld
        self._last_on_end = 0  # one past the last sample of the latest on-frame

        self.discarded_bursts = 0  # candidates that never became a weld
        self.forced_ends = 0  # welds cut at max_weld_s
        self.silent_frames = 0  # frames whose smoothing span held digital silence (no floor)
        # Read-only hook for `weldmon segment --plot`: when a list, each decided frame adds
        # (its first sample, its smoothed level dB, the noise floor dB it is judged against;
        # NaN before the first). Never read here.
        self.trace: list[tuple[int, float, float]] | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def in_weld(self) -> bool:
        """True between a start boundary and its end boundary."""
        return self._state is _State.WELD

    @property
    def lookback_samples(self) -> int:
        """Upper bound on how far a start boundary lies before the end of the latest block:
        pre-roll + the candidate history (min weld + one hang-over) + the smoothing delay
        + a partial frame."""
        frames = self._candidate_frames() + self._half_smooth + 1
        return self._pre_roll + frames * self._frame_len

    @property
    def arc_confirmed_until(self) -> int:
        """The end of the weld's latest on-frame: its end (after the hang-over, forced or at
        the stream's close) lies at or after it."""
        return self._last_on_end if self._state is _State.WELD else 0

    @property
    def noise_floor_db(self) -> float | None:
        """Current noise-floor estimate (dBFS in the gate's band), None before the first frame."""
        return self._floor_history.min() if self._floor_history else None

    @property
    def gap_samples(self) -> int:
        """Samples missing between blocks (the frame grid restarted after each gap)."""
        return self._grid.gap_samples

    def take(self, samples: np.ndarray, start_index: int) -> Frames:
        """Buffer the block and return the whole frames it completes (their band powers go
        to `decide` before the next block)."""
        return Frames(self._grid.take(samples, start_index), self._meter)

    def decide(self, measured: np.ndarray) -> list[Boundary]:
        """The band powers of the frames `take` returned; the boundaries they complete."""
        waiting = len(self._grid.frame_starts)
        if len(self._powers) + measured.size != waiting:
            raise SegmentationError(
                f"{measured.size} powers for {waiting - len(self._powers)} frames"
            )
        if measured.size == 0:
            return []
        self._powers.extend(measured.tolist())
        return self._decide(flush=False)

    def close(self, end_index: int) -> list[Boundary]:
        """The stream ends at ``end_index`` (one past its last sample): decides the frames
        still waiting for smoothing neighbours and closes an open weld there."""
        if self._grid.closed:
            return []
        self._grid.closed = True
        boundaries = self._decide(flush=True)
        if self._state is _State.WELD:
            end = max(self._last_on_end, self._first_on)
            boundaries.append(Boundary("end", min(end, end_index)))
        self._state = _State.IDLE
        return boundaries

    # -- internals --------------------------------------------------------------------------

    def _candidate_frames(self) -> int:
        """Frames of candidate history kept: enough to find a start min_weld_s + a hang-over
        back (a dip inside the candidate) from the frame that confirms it."""
        return (self._min_weld + self._hangover) // self._frame_len + 2

    def _decide(self, flush: bool) -> list[Boundary]:
        """Smooth every frame whose right-hand neighbours have arrived (all of them when
        ``flush``) and step the gate through them.

        Plain Python floats on purpose: 20 frames a second of 5-term sums cost less than the
        numpy calls that would vectorise them, and each frame's sum is taken in the same order
        whatever the block sizes, which keeps the boundaries block-size invariant."""
        h = self._half_smooth
        powers, left = self._powers, self._left
        ready = len(powers) if flush else max(0, len(powers) - h)
        boundaries: list[Boundary] = []
        for k in range(ready):
            right = powers[k : k + h + 1]
            smoothed = (sum(left) + sum(right)) / (len(left) + len(right))
            level_db = 10.0 * math.log10(max(smoothed, _FLOOR_POWER))
            silent = min(self._left_quietest, min(right)) < _SILENCE_POWER
            if self.trace is not None:
                floor = self.noise_floor_db
                start = self._grid.frame_starts[k]
                self.trace.append((start, level_db, math.nan if floor is None else floor))
            self._step(level_db, self._grid.frame_starts[k], silent, boundaries)
            if h:
                left.append(powers[k])
                self._left_quietest = min(left)
        del powers[:ready]
        del self._grid.frame_starts[:ready]
        return boundaries

    def _step(self, level_db: float, frame_start: int, silent: bool, out: list[Boundary]) -> None:
        """One smoothed frame through the state machine. ``silent``: digital silence lies
        within the frame's smoothing span, so its level says nothing about the room."""
        frame_end = frame_start + self._frame_len
        floor = self.noise_floor_db
        if floor is None:
            floor = level_db
        above = level_db - floor
        p = self.params
        state = self._state
        if state is _State.IDLE:
            if above >= p.on_db:
                self._state = _State.CANDIDATE
                self._last_on_end = frame_end
                self._candidate.clear()
                self._candidate.append((frame_start, level_db))
        elif state is _State.CANDIDATE:
            self._candidate.append((frame_start, level_db))
            if above >= p.off_db:
                self._last_on_end = frame_end
                self._try_confirm(floor, frame_end, out)
            elif frame_end - self._last_on_end >= self._hangover_decided:
                self._state = _State.IDLE
                self.discarded_bursts += 1
        elif state is _State.WELD:
            if above >= p.off_db and level_db >= self._weld_ref_db() - p.edge_db:
                self._last_on_end = frame_end
                self._weld_levels.append(level_db)
            elif frame_end - self._last_on_end >= self._hangover_decided:
                self._state = _State.IDLE
                out.append(Boundary("end", self._last_on_end))
            if self._state is _State.WELD and frame_end - self._first_on >= self._max_weld:
                self._state = _State.LOCKOUT
                self.forced_ends += 1
                out.append(Boundary("end", frame_end, forced=True))
        elif above < p.off_db:  # LOCKOUT
            self._state = _State.IDLE
        if silent:
            self.silent_frames += 1
        elif self._state is not _State.WELD:
            # Candidate frames count too: a new steady noise that never makes a weld is
            # absorbed into the floor after floor_window_s instead of holding the gate.
            self._floor_history.push(level_db)

    def _weld_ref_db(self) -> float:
        # statistics.median on ~20 floats: far less call overhead than np.median, same value.
        return statistics.median(self._weld_levels)

    def _try_confirm(self, floor_db: float, frame_end: int, out: list[Boundary]) -> None:
        """Confirm the candidate as a weld once its own level (median of its latest ref_s of
        on-frames) is on_db above the floor and it has stayed within edge_db of that level
        for min_weld_s. The start goes to the first frame at the weld's level, which skips
        the quieter wire-feed creep before ignition."""
        p = self.params
        on = [(s, lv) for s, lv in self._candidate if lv - floor_db >= p.off_db]
        maxlen = self._weld_levels.maxlen
        assert maxlen is not None  # bounded in __init__
        recent = [lv for _, lv in on[-maxlen:]]
        ref = statistics.median(recent)
        if ref - floor_db < p.on_db:
            return
        first = next(s for s, lv in on if lv >= ref - p.edge_db)
        if frame_end - first < self._min_weld:
            return
        self._weld_levels.clear()
        self._weld_levels.extend(recent)
        self._first_on = first
        self._state = _State.WELD
        out.append(Boundary("start", max(self._grid.stream_start, first - self._pre_roll)))


def segment_recording(
    samples: np.ndarray, sample_rate: int, params: GateParams | None = None
) -> list[tuple[int, int]]:
    """Welds (start, end) sample indices in a whole recording, by the streaming gate.

    A weld still open at the end of the recording ends at its last on-sample."""
    gate = GateSegmenter(params or GateParams(), sample_rate)
    x = np.asarray(samples, dtype=np.float32)
    boundaries = gate.process(x, 0) + gate.close(x.size)
    return pair_boundaries(boundaries)
