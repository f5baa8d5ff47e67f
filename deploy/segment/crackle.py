"""Crackle segmenter: weld start and end from the arc's crackle, block by block.

One ``CrackleSegmenter`` per station. How it decides (the data behind it and the
leave-one-setup-out figures: docs/segmentation.md):

1. Crackle: a frame sounds like an arc when the kurtosis of its 2-8 kHz band, tones clipped
   (``crackle_meter``), averaged in logs over ``crackle_smooth_s``, is at least
   ``crackle_on``. Steady noise of any level, colour or tone reads 3; it needs no floor.
2. Level: per profile band (250 Hz-8 kHz), the power above the station's noise floor (an
   exponential mean over idle frames without crackle), smoothed and median-filtered
   (``crackle_frames``). Levels are compared as an SNR-weighted mean of per-band dB
   differences, each band weighted by how far this weld stands above the floor there.
3. Candidate: opens on the first crackle; closes after ``bridge_s`` without it (discarded
   and counted when shorter than ``min_weld_s``).
4. Start: ``confirm_s`` after the candidate opened (or at its end when shorter), the weld's
   own level is the median of its latest ``ref_s`` of crackle frames; the start goes to the
   first frame of the last stretch within ``edge_db`` of it. A quieter arc before it (a
   neighbouring cell) is left out. A station that remembers its own recent welds decides
   sooner, after ``max(min_weld_s, ref_s)``, when the candidate's level is within ``own_db``
   of theirs, and does not report a candidate more than ``neighbour_db`` under them at all
   (``quiet_candidates``).
5. During the weld a frame is on while it crackles and stays within ``edge_db`` of the weld's
   level. Frames without crackle that are ``mask_db`` louder than the weld are masked (an
   interfering noise over the arc) and count neither way. After a gap the arc must go on for
   ``resume_s`` to continue the weld, and the gap becomes a reported dropout; the weld ends
   at its last on-sample once ``bridge_s`` of off-frames followed it, or is cut at
   ``max_weld_s`` (``forced_ends``; then crackle must stop before a new weld can start).
6. Fading end: crackle after the last on-frame that lies up to ``fade_db`` further under the
   weld's level than ``edge_db`` is held undecided. When it sounded for ``resume_s`` in a
   row and then stopped, with nothing weaker crackling since the last on-frame, it was the
   weld's own arc going out (a burn-through's last second sounds 7-8 dB weaker) and the weld
   ends after it; when it goes on for ``fade_s`` it is another cell's arc and the weld ends
   at its last on-frame.

Results do not depend on how the stream is cut into blocks; ``segment_welds`` in
``deploy.segment.offline`` runs this very class over a whole recording.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from deploy.segment.crackle_frames import FrameSmoother
from deploy.segment.crackle_meter import POWER_FLOOR, CrackleMeter, crackle_meter
from deploy.segment.crackle_params import CrackleParams
from deploy.segment.framing import FrameGrid
from deploy.segment.protocol import Boundary, Dropout, Frames, SegmentationError, Segmenter

# Excess power is floored this far (as a fraction) under the frame's own power, so a frame
# at the floor reads 30 dB under it rather than minus infinity.
EXCESS_FLOOR = 1e-3
MAX_WEIGHT_DB = 30.0  # a band's weight (its SNR in the weld) is capped here


class _State(Enum):
    IDLE = "idle"
    CANDIDATE = "candidate"
    WELD = "weld"
    LOCKOUT = "lockout"  # after a forced end, until the crackle stops


@dataclass(frozen=True, slots=True)
class _Heard:
    """A candidate frame as the segmenter heard it."""

    index: int
    start: int
    level: np.ndarray  # dB above the floor per profile band (median-smoothed)
    crackle: bool
    means: np.ndarray  # its band powers before the median (``_quick`` makes them dB)


class _LatestRows:
    """The latest ``size`` rows pushed, and their per-column median (the weld's own level).

    A ring of rows, sorted when the median is asked for after ``REFRESH`` more pushes (the
    weld's level moves over seconds; a sort per frame was a tenth of the segmenter's cost).
    Pushes are counted in stream order, so the median does not depend on blocks."""

    REFRESH = 4

    def __init__(self, size: int, width: int) -> None:
        self._rows = np.empty((size, width))
        self._count = 0
        self._pos = 0
        self._stale = 0  # pushes since the median was taken
        self._median: np.ndarray | None = None

    def __bool__(self) -> bool:
        return self._count > 0

    def push(self, row: np.ndarray) -> None:
        self._rows[self._pos] = row
        self._pos = (self._pos + 1) % self._rows.shape[0]
        self._count = min(self._count + 1, self._rows.shape[0])
        self._stale += 1

    def median(self) -> np.ndarray:
        if self._median is None or self._stale >= self.REFRESH:
            n = self._count
            ordered = np.sort(self._rows[:n], axis=0)
            self._median = (
                ordered[n // 2].copy() if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
            )
            self._stale = 0
        return self._median


@dataclass
class _Weld:
    """Book-keeping of the weld in progress."""

    first: int  # frame index of its first on-frame
    levels: _LatestRows  # latest on-frames' levels (its own level is their median)
    last_on: int  # frame index of the latest on-frame
    last_on_end: int  # one past its last sample
    tail_end: int  # one past the crackle frames right after last_on, within edge_reach_s
    off: int = 0  # unmasked off-frames since last_on
    masked: int = 0  # masked frames since last_on
    fading: int = 0  # fading frames since last_on (crackle up to fade_db under the edge)
    fade_end: int = 0  # one past the latest fading frame since last_on (0: none)
    fade_void: bool = False  # weaker crackle came since last_on: no fading end this time
    fade_run: int = 0  # consecutive fading frames up to the latest frame
    run: list[_Heard] = field(default_factory=list)  # on-frames after a gap, not yet resumed
    ref: np.ndarray | None = None  # its level as last taken, and the band weights from it
    weights: np.ndarray | None = None
    dropouts: list[Dropout] = field(default_factory=list)


def _weighted_drop(ref: np.ndarray, level: np.ndarray, weights: np.ndarray) -> float:
    """SNR-weighted mean of how far ``level`` lies under ``ref`` (dB); 0 without weights.
    ``weights`` are normalised (sum 1) or all zero."""
    return float(np.dot(weights, ref - level))


class CrackleSegmenter(Segmenter):
    """Streaming crackle segmenter for one station; see the module docstring for the rules.

    ``process`` takes consecutive blocks of mono float32 samples at ``sample_rate``; each
    block's ``start_index`` must continue the previous one (a gap re-anchors the frame grid
    and is counted in ``gap_samples``; going backwards raises ``SegmentationError``).
    """

    def __init__(self, params: CrackleParams, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise SegmentationError(f"sample_rate must be positive, got {sample_rate}")
        self.params = params
        self.sample_rate = sample_rate
        self._frame_len = max(1, round(params.frame_s * sample_rate))
        frame_s = self._frame_len / sample_rate

        def frames(seconds: float) -> int:
            return max(1, round(seconds / frame_s))

        high = min(params.band_high_hz, sample_rate / 2.0 + 1.0)
        self._meter = crackle_meter(
            self._frame_len, sample_rate, params.band_low_hz, high, params.tone_clip_db
        )
        self._smoother = FrameSmoother(
            round(params.crackle_smooth_s / frame_s) // 2,
            round(params.level_smooth_s / frame_s) // 2,
            round(params.level_median_s / frame_s) // 2,
            self._meter.profile_bands,
        )
        self._log_on = math.log10(params.crackle_on)
        self._floor_keep = math.exp(-frame_s / params.floor_s)
        self._ref_n = frames(params.ref_s)
        self._min_weld_n = frames(params.min_weld_s)
        self._confirm_n = frames(params.confirm_s)
        self._early_n = max(self._min_weld_n, self._ref_n)
        self._bridge_n = round(params.bridge_s / frame_s)
        self._resume_n = max(1, round(params.resume_s / frame_s))
        self._reach_n = round(params.edge_reach_s / frame_s)
        self._fade_n = 0 if params.fade_db is None else frames(params.fade_s)
        self._dropout_min = round(params.dropout_min_s * sample_rate)
        self._max_weld_n = frames(params.max_weld_s)
        self._pre_roll = round(params.pre_roll_s * sample_rate)
        self._candidate: deque[_Heard] = deque(maxlen=self._confirm_n + self._bridge_n + 2)

        self._grid = FrameGrid(self._frame_len)
        self._state = _State.IDLE
        self._floor: np.ndarray | None = None  # per-band noise floor (power)
        self._floor_db_now = np.zeros(self._meter.profile_bands)
        self._cand_last_on = 0  # frame index of the candidate's latest crackle frame
        self._cand_off = 0
        self._cand_levels = _LatestRows(1, self._meter.profile_bands)  # its crackle frames'
        self._weld: _Weld | None = None
        self._memory: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(
            maxlen=params.memory_welds
        )  # (level, weights, floor dB) of the station's latest welds

        self.discarded_bursts = 0  # candidates shorter than min_weld_s
        self.quiet_candidates = 0  # candidates taken for a neighbouring cell's weld
        self.forced_ends = 0  # welds cut at max_weld_s
        self.silent_frames = 0  # frames whose crackle span held digital silence
        # Read-only hook for `weldmon segment --plot`: when a list, each decided frame adds
        # (its first sample, its smoothed log10 kurtosis, log10 crackle_on). Never read here.
        self.trace: list[tuple[int, float, float]] | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def in_weld(self) -> bool:
        """True between a start boundary and its end boundary."""
        return self._state is _State.WELD

    @property
    def meter(self) -> CrackleMeter:
        """The meter whose rows ``decide`` expects (shared by equal segmenters)."""
        return self._meter

    @property
    def lookback_samples(self) -> int:
        """Upper bound on how far a start lies before the end of the latest block: the
        candidate history, the smoothing look-ahead, a partial frame and the pre-roll."""
        # maxlen: the candidate deque is always created bounded (Optional only to the checker).
        frames = self._candidate.maxlen + self._smoother.lookahead + 2  # type: ignore[operator]
        return self._pre_roll + frames * self._frame_len

    @property
    def arc_confirmed_until(self) -> int:
        """The end of the weld's latest frame at its own level: every end this segmenter
        places (the tail, a fading end, a forced cut, the stream's close) lies at or after
        it."""
        return self._weld.last_on_end if self._weld is not None else 0

    @property
    def gap_samples(self) -> int:
        """Samples missing between blocks (the frame grid restarted after each gap)."""
        return self._grid.gap_samples

    def take(self, samples: np.ndarray, start_index: int) -> Frames:
        """Buffer the block and return the whole frames it completes; their spectra, by
        ``meter``, go to ``decide`` before the next block."""
        return Frames(self._grid.take(samples, start_index), self._meter)

    def decide(self, measured: np.ndarray) -> list[Boundary]:
        """The meter's rows for the frames ``take`` returned; the boundaries they complete."""
        grid = self._grid
        if measured.shape[0] != len(grid.frame_starts):
            raise SegmentationError(
                f"{measured.shape[0]} measurements for {len(grid.frame_starts)} frames"
            )
        if measured.shape[0] == 0:
            return []
        starts, grid.frame_starts = grid.frame_starts, []
        self._smoother.push(starts, measured)
        return self._step_ready(flush=False)

    def close(self, end_index: int) -> list[Boundary]:
        """The stream ends at ``end_index`` (one past its last sample): decides the frames
        still waiting for their look-ahead and closes an open weld or candidate there."""
        if self._grid.closed:
            return []
        self._grid.closed = True
        out = self._step_ready(flush=True)
        if self._state is _State.WELD:
            assert self._weld is not None
            self._end_weld(min(self._weld_end(self._weld), end_index), out, forced=False)
        elif self._state is _State.CANDIDATE:
            self._close_candidate(out)
        self._state = _State.IDLE
        return out

    def _step_ready(self, flush: bool) -> list[Boundary]:
        out: list[Boundary] = []
        frames = self._smoother.ready(flush)
        if frames is None:
            return out
        crackle = (frames.crackle >= self._log_on) & ~frames.silent
        if self.trace is not None:
            on = self._log_on
            self.trace.extend(
                (s, c, on)
                for s, c in zip(frames.starts.tolist(), frames.crackle.tolist(), strict=True)
            )
        for k in range(frames.starts.size):
            self._step(
                frames.first + k,
                int(frames.starts[k]),
                bool(crackle[k]),
                frames.levels[k],
                frames.means[k],
                bool(frames.silent[k]),
                out,
            )
        return out

    # -- the state machine ------------------------------------------------------------------

    def _step(
        self,
        index: int,
        start: int,
        crackle: bool,
        levels: np.ndarray,
        means: np.ndarray,
        silent: bool,
        out: list[Boundary],
    ) -> None:
        """One decided frame through the state machine."""
        if silent:
            self.silent_frames += 1
        elif self._floor is None:
            self._set_floor(np.maximum(levels, POWER_FLOOR))
        floor = self._floor if self._floor is not None else np.maximum(levels, POWER_FLOOR)
        state = self._state
        if state is _State.IDLE and not crackle:
            # Most frames: the room between welds. Only the floor learns from them: it rises
            # slowly (an exponential mean) and falls at once (a quieter room or a lower gain
            # is the floor from the next frame on).
            if not silent:
                mean = self._floor_keep * floor + (1.0 - self._floor_keep) * levels
                self._set_floor(np.minimum(mean, np.maximum(levels, POWER_FLOOR)))
            return
        heard = _Heard(index, start, self._excess_db(levels, floor), crackle, means)
        if state is _State.IDLE:  # and it crackles (see above)
            self._state = _State.CANDIDATE
            self._candidate.clear()
            self._candidate.append(heard)
            self._cand_last_on, self._cand_off = index, 0
            self._cand_levels = _LatestRows(self._ref_n, heard.level.size)
            self._cand_levels.push(heard.level)
        elif state is _State.CANDIDATE:
            self._candidate.append(heard)
            if crackle:
                self._cand_last_on, self._cand_off = index, 0
                self._cand_levels.push(heard.level)
                age = index - self._candidate[0].index + 1
                # A station that knows its own welds' level need not wait for a quieter arc
                # to give way: its start is decided once the candidate's level is its own.
                if age >= self._confirm_n or (
                    age >= self._early_n and self._own_level(self._cand_levels.median())
                ):
                    self._try_confirm(out)
            elif not self._masked(self._cand_levels.median(), heard.level):
                self._cand_off += 1
                if self._cand_off >= max(1, self._bridge_n):
                    self._close_candidate(out)
        elif state is _State.WELD:
            self._weld_step(heard, out, replay=False)
        else:  # LOCKOUT: a new weld may start once the crackle stopped for a bridge
            self._cand_off = 0 if crackle else self._cand_off + 1
            if self._cand_off >= max(1, self._bridge_n):
                self._state = _State.IDLE

    @staticmethod
    def _excess_db(levels: np.ndarray, floor: np.ndarray) -> np.ndarray:
        """Power above the floor (dB) per band, floored EXCESS_FLOOR under the power."""
        excess = np.maximum(levels - floor, EXCESS_FLOOR * levels)
        return np.asarray(10.0 * np.log10(np.maximum(excess, POWER_FLOOR)))

    def _quick(self, heard: _Heard) -> np.ndarray:
        """A frame's level before the median, as power above the floor (dB): computed only
        where a weld's edges are placed (the floor does not move during a candidate or weld)."""
        assert self._floor is not None
        return self._excess_db(heard.means, self._floor)

    def _set_floor(self, floor: np.ndarray) -> None:
        self._floor = floor
        self._floor_db_now = 10.0 * np.log10(np.maximum(floor, POWER_FLOOR))

    def _floor_db(self) -> np.ndarray:
        return self._floor_db_now

    def _weights(self, ref: np.ndarray) -> np.ndarray:
        """Each band's weight: the weld's SNR there (the level is already power above the
        floor, so ref - floor), capped and normalised to sum 1 (all 0 without any SNR)."""
        w: np.ndarray = np.clip(ref - self._floor_db(), 0.0, MAX_WEIGHT_DB)
        total = float(w.sum())
        return w / total if total > 0.0 else w

    def _masked(self, ref: np.ndarray, level: np.ndarray) -> bool:
        """A frame without crackle mask_db louder than ``ref``: a noise over the arc."""
        return _weighted_drop(ref, level, self._weights(ref)) <= -self.params.mask_db

    def _memory_valid(self) -> bool:
        """The station remembers its own welds' level, and the floor has not moved by more
        than memory_floor_db since (else the gain or the room changed: it is forgotten)."""
        if self.params.neighbour_db is None or not self._memory:
            return False
        weights = self._memory[-1][1]
        moved = _weighted_drop(self._memory[-1][2], self._floor_db(), weights)
        if abs(moved) > self.params.memory_floor_db:
            self._memory.clear()
            return False
        return True

    def _own_level(self, ref: np.ndarray) -> bool:
        """True when ``ref`` is within own_db of the station's own recent welds."""
        if self.params.own_db is None or not self._memory_valid():
            return False
        levels = np.median(np.stack([m[0] for m in self._memory]), axis=0)
        return abs(_weighted_drop(levels, ref, self._memory[-1][1])) <= self.params.own_db

    def _quiet(self, ref: np.ndarray) -> bool:
        """True when ``ref`` lies neighbour_db under the station's own recent welds."""
        if not self._memory_valid():
            return False
        levels = np.median(np.stack([m[0] for m in self._memory]), axis=0)
        assert self.params.neighbour_db is not None
        return _weighted_drop(levels, ref, self._memory[-1][1]) > self.params.neighbour_db

    def _candidate_start(self) -> tuple[int, np.ndarray, bool] | None:
        """(position in the candidate of the weld's first frame, the weld's level, quiet) for
        the candidate as heard so far; None when it is not (yet) long enough."""
        on = [h.level for h in self._candidate if h.crackle]
        if not on:
            return None
        ref = np.median(np.stack(on[-self._ref_n :]), axis=0)
        weights = self._weights(ref)
        edge = self.params.edge_db
        heard = self._candidate
        drops = [_weighted_drop(ref, h.level, weights) for h in heard]
        within = [h.crackle and d < edge for h, d in zip(heard, drops, strict=True)]
        if not any(within):
            return None
        # The weld is the last stretch at its own level: walk back from its latest frame
        # over gaps shorter than a bridge, as the weld itself would bridge them (masked
        # frames do not count). A quieter arc before it (a neighbouring cell's) is a gap of
        # a bridge or more and stays out.
        first = max(k for k, w in enumerate(within) if w)
        gap = 0
        for k in range(first - 1, -1, -1):
            if within[k]:
                first, gap = k, 0
            elif drops[k] > -self.params.mask_db:  # masked frames count neither way
                gap += 1
                if gap >= max(1, self._bridge_n):
                    break
        # The median blurs a noisy edge, and an arc often strikes with a burst and settles
        # for a few tenths of a second after it: the earliest frame up to edge_reach_s
        # before that crackles and is as loud by the quicker level belongs to the weld.
        for k in range(first - 1, max(0, first - self._reach_n) - 1, -1):
            if heard[k].crackle and _weighted_drop(ref, self._quick(heard[k]), weights) < edge:
                first = k
        if self._cand_last_on - self._candidate[first].index + 1 < self._min_weld_n:
            return None
        return first, ref, self._quiet(ref)

    def _try_confirm(self, out: list[Boundary]) -> None:
        found = self._candidate_start()
        if found is None or found[2]:
            return
        first, ref, _ = found
        self._open_weld(first, ref, out)

    def _close_candidate(self, out: list[Boundary]) -> None:
        """The candidate's crackle stopped: a weld if long enough (start and end at once)."""
        found = self._candidate_start()
        self._state = _State.IDLE
        if found is None:
            self.discarded_bursts += 1
            return
        if found[2]:
            self.quiet_candidates += 1
            return
        first, ref, _ = found
        self._open_weld(first, ref, out)
        if self._state is _State.WELD:
            assert self._weld is not None
            self._end_weld(self._weld_end(self._weld), out, forced=False)

    def _open_weld(self, first: int, ref: np.ndarray, out: list[Boundary]) -> None:
        """Start the weld at the candidate's frame ``first`` and replay the candidate frames
        after it through the weld's book-keeping (no end can fall inside them)."""
        heard = list(self._candidate)
        start = heard[first]
        levels = _LatestRows(self._ref_n, ref.size)
        weights = self._weights(ref)
        for h in heard[first:]:
            if h.crackle and _weighted_drop(ref, h.level, weights) < self.params.edge_db:
                levels.push(h.level)
        if not levels:
            levels.push(ref)
        self._weld = _Weld(
            first=start.index,
            levels=levels,
            last_on=start.index,
            last_on_end=start.start + self._frame_len,
            tail_end=start.start + self._frame_len,
        )
        self._state = _State.WELD
        out.append(Boundary("start", max(self._grid.stream_start, start.start - self._pre_roll)))
        for h in heard[first + 1 :]:
            self._weld_step(h, out, replay=True)
        self._candidate.clear()

    def _weld_step(self, heard: _Heard, out: list[Boundary], replay: bool) -> None:
        w = self._weld
        assert w is not None
        p = self.params
        ref = w.levels.median()
        if w.ref is not ref:
            w.ref, w.weights = ref, self._weights(ref)
        weights = w.weights
        assert weights is not None  # set with w.ref just above
        drop = _weighted_drop(ref, heard.level, weights)
        if heard.crackle and drop < p.edge_db:
            if heard.index == w.last_on + 1 and not w.run:
                self._on(w, heard, replay)
            else:
                w.run.append(heard)
                # After a short gap (flicker) the arc goes on at once; after a longer one it
                # must sound for resume_s (a pop or a blow after the end is no resumption).
                short_gap = w.run[0].index - w.last_on - 1 < self._resume_n
                if short_gap or len(w.run) >= self._resume_n:
                    self._resume(w, replay)
        else:
            w.run.clear()
            if (
                heard.crackle
                and w.tail_end == heard.start
                and heard.index - w.last_on <= self._reach_n
                and _weighted_drop(ref, self._quick(heard), weights) < p.edge_db
            ):
                w.tail_end = heard.start + self._frame_len
            if drop <= -p.mask_db:  # louder than the weld without its crackle: masked
                w.masked += 1
                w.fade_run = 0
            # fade_db is not None whenever _fade_n is non-zero (see __init__).
            elif heard.crackle and self._fade_n and drop < p.edge_db + p.fade_db:  # type: ignore[operator]
                # A weaker arc right after the weld: its own arc fading out (it goes out
                # within fade_s, and then nothing crackles) or another cell's going on (it
                # goes on for longer, or in and out of this band). Held undecided: it
                # neither ends the weld nor continues it. Like an arc that resumes, a fading
                # one must sound for resume_s in a row (a pop after the end is no fade).
                w.fading += 1
                w.fade_run += 1
                if not w.fade_void and w.fade_run >= self._resume_n:
                    w.fade_end = heard.start + self._frame_len
            else:
                if heard.crackle:  # crackle weaker still: not one arc fading out
                    w.fade_void, w.fade_end = True, 0
                w.off += 1
                w.fade_run = 0
        if replay:
            return
        if self._fade_n and w.fading >= self._fade_n:
            # The weaker arc went on for fade_s: not this weld's fading end. The weld ends
            # where its own level did; the weaker arc may become a weld of its own.
            w.fade_end = 0
            self._end_weld(w.tail_end, out, forced=False)
        elif w.off >= max(1, self._bridge_n):
            self._end_weld(self._weld_end(w), out, forced=False)
        elif heard.index - w.first + 1 >= self._max_weld_n:
            self.forced_ends += 1
            self._end_weld(heard.start + self._frame_len, out, forced=True)
            self._state = _State.LOCKOUT
            self._cand_off = 0

    def _on(self, w: _Weld, heard: _Heard, replay: bool) -> None:
        w.last_on, w.last_on_end = heard.index, heard.start + self._frame_len
        w.tail_end = w.last_on_end
        w.off = w.masked = w.fading = w.fade_end = w.fade_run = 0
        w.fade_void = False
        if not replay:
            w.levels.push(heard.level)

    def _resume(self, w: _Weld, replay: bool) -> None:
        """The arc went on again after a gap for resume_s: the gap was a dropout (unless
        masked noise filled most of it) and the weld goes on."""
        gap_start, gap_end = w.last_on_end, w.run[0].start
        if gap_end - gap_start >= max(1, self._dropout_min) and w.masked <= w.off:
            w.dropouts.append(Dropout(gap_start, gap_end))
        for h in w.run:
            self._on(w, h, replay)
        w.run.clear()

    @staticmethod
    def _weld_end(w: _Weld) -> int:
        """Where the weld ends when it ends now: after its fading arc, if any."""
        return max(w.tail_end, w.fade_end)

    def _end_weld(self, end: int, out: list[Boundary], forced: bool) -> None:
        w = self._weld
        assert w is not None
        out.append(Boundary("end", end, forced=forced, dropouts=tuple(w.dropouts)))
        if not forced:
            self._remember(w)
        self._weld = None
        self._state = _State.IDLE

    def _remember(self, w: _Weld) -> None:
        ref = w.levels.median()
        self._memory.append((ref, self._weights(ref), self._floor_db()))
