"""The crackle segmenter's per-frame smoothing: raw frame measurements in, the values each
decided frame is judged by out.

Per raw frame: log10 of the crackle band's kurtosis, the profile band powers, a silence flag.
Per decided frame ``i``:

- ``crackle``: mean of log10 kurtosis over the centred ``2 * crackle_half + 1`` frames (the
  arc's crackle comes and goes with its flicker; a mean of logs keeps one loud pop from
  ruling the span);
- ``levels``: the profile band powers, first a centred mean over ``2 * level_half + 1``
  frames, then a centred median over ``2 * median_half + 1`` of those means. The median keeps
  steps (an arc's ignition and end) sharp while it ignores the flicker's peaks, so a quieter
  neighbouring cell's weld cannot reach the level of this cell's by its loudest moments;
- ``silent``: the frame is digital silence (zeros say nothing about a room);
- ``means``: the level-smoothed band powers before the median: quicker at an edge, noisier
  in between (the segmenter places a weld's edges by them within ``edge_reach_s``).

A frame is decided once the frames its spans need have arrived, or all at once on flush,
where spans are cut at the stream's ends (the same cut in offline and streaming use). Each
block's ready frames are computed in a few array operations; sums are taken term by term in
one fixed order and medians of odd spans are exact, so a frame's values do not depend on how
the stream was cut into blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRIM_FRAMES = 64  # frames no span needs any more are dropped this many at a time


@dataclass(frozen=True, slots=True)
class DecidedFrames:
    """What consecutive frames are judged by (see the module docstring)."""

    first: int  # frame index of the first (frames since the stream's first; gaps ignored)
    starts: np.ndarray  # int64 [n]: sample index of each frame's first sample
    crackle: np.ndarray  # float64 [n]: mean log10 kurtosis over the crackle span
    levels: np.ndarray  # float64 [n, bands]: median of the level-smoothed band powers
    silent: np.ndarray  # bool [n]
    means: np.ndarray  # float64 [n, bands]: the level-smoothed band powers (no median)


def _centred_means(values: np.ndarray, lo: int, hi: int, half: int, end: int) -> np.ndarray:
    """Means over ``[j - half, j + half]`` (cut to ``[0, end)``) of rows ``values[j]`` for
    ``j`` in ``[lo, hi)``, where ``values[0]`` is frame 0. Full spans are summed term by term
    left to right (vectorised over frames), cut spans the same way one by one."""
    out = np.empty((hi - lo, *values.shape[1:]))
    full_lo, full_hi = max(lo, half), min(hi, end - half)
    if full_lo < full_hi:
        acc = values[full_lo - half : full_hi - half].copy()
        for t in range(1, 2 * half + 1):
            acc += values[full_lo - half + t : full_hi - half + t]
        out[full_lo - lo : full_hi - lo] = acc / (2 * half + 1)
    for j in (*range(lo, min(hi, full_lo)), *range(max(lo, full_hi), hi)):
        a, b = max(0, j - half), min(end, j + half + 1)
        acc = values[a].copy()
        for r in range(a + 1, b):
            acc += values[r]
        out[j - lo] = acc / (b - a)
    return out


def _centred_medians(rows: np.ndarray, lo: int, hi: int, half: int, end: int) -> np.ndarray:
    """Per-column medians over ``[j - half, j + half]`` (cut to ``[0, end)``) of ``rows`` for
    ``j`` in ``[lo, hi)``: the exact middle value of each odd span (one small sort per frame
    costs less than a windowed view for the few frames of a block)."""
    out = np.empty((hi - lo, rows.shape[1]))
    for j in range(lo, hi):
        a, b = max(0, j - half), min(end, j + half + 1)
        if b - a == 2 * half + 1:
            out[j - lo] = np.sort(rows[a:b], axis=0)[half]
        else:
            out[j - lo] = np.median(rows[a:b], axis=0)
    return out


class _Buffer:
    """Rows appended at the end, dropped from the front, in one preallocated array (a block
    appends a couple of rows: a fresh concatenation each time cost more than the rest)."""

    def __init__(self, shape: tuple[int, ...], dtype: type = np.float64) -> None:
        self._data: np.ndarray = np.empty((256, *shape), dtype=dtype)
        self.size = 0

    @property
    def rows(self) -> np.ndarray:
        """The rows held (a view)."""
        return self._data[: self.size]

    def append(self, rows: np.ndarray) -> None:
        n = rows.shape[0]
        if self.size + n > self._data.shape[0]:
            grown = np.empty((2 * (self.size + n), *self._data.shape[1:]), self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : self.size + n] = rows
        self.size += n

    def drop_front(self, n: int) -> None:
        self._data[: self.size - n] = self._data[n : self.size]
        self.size -= n


class FrameSmoother:
    """Raw frame measurements in (``push``), ``DecidedFrames`` out (``ready``)."""

    def __init__(self, crackle_half: int, level_half: int, median_half: int, bands: int) -> None:
        self.crackle_half = crackle_half
        self.level_half = level_half
        self.median_half = median_half
        self.bands = bands
        # How many frames past a frame must have arrived before it can be decided.
        self.lookahead = max(crackle_half, level_half + median_half)
        self._keep = max(crackle_half, median_half + level_half) + level_half
        self._base = 0  # frame index of the first frame held
        self._starts = _Buffer((), np.int64)
        self._rows = _Buffer((bands + 2,))  # band powers, log10 kurtosis, silent (1.0)
        self._means = _Buffer((bands,))  # level-smoothed powers from frame self._base on
        self._next = 0  # the next frame to decide

    @property
    def pushed(self) -> int:
        """Frames pushed so far."""
        return self._base + self._rows.size

    def push(self, starts: list[int], rows: np.ndarray) -> None:
        """Raw measurements of consecutive frames: their first samples and the meter's rows
        (band powers, log10 kurtosis, silence flag; ``CrackleMeter.measure``)."""
        self._starts.append(np.asarray(starts, dtype=np.int64))
        self._rows.append(rows)

    def ready(self, flush: bool) -> DecidedFrames | None:
        """The frames that can be decided now (all of them when ``flush``), or None."""
        end = self.pushed
        last = end if flush else end - self.lookahead  # one past the last frame to decide
        if last <= self._next:
            return None
        b, nb = self._base, self.bands
        lo, hi = self._next - b, last - b
        rows = self._rows.rows
        # Level means are needed up to hi + median_half; each is final once its own span
        # has arrived (or on flush), so it is computed exactly once.
        have = self._means.size
        want = (end if flush else end - self.level_half) - b
        if want > have:
            powers = rows[:, :nb]
            self._means.append(_centred_means(powers, have, want, self.level_half, end - b))
        means = self._means.rows
        crackle = _centred_means(rows[:, nb], lo, hi, self.crackle_half, end - b)
        levels = _centred_medians(means, lo, hi, self.median_half, means.shape[0])
        out = DecidedFrames(
            self._next,
            self._starts.rows[lo:hi].copy(),
            crackle,
            levels,
            rows[lo:hi, nb + 1] > 0.5,
            means[lo:hi].copy(),
        )
        self._next = last
        self._trim()
        return out

    def _trim(self) -> None:
        """Drop frames no span of an undecided frame reaches any more."""
        drop = self._next - self._keep - self._base
        if drop < TRIM_FRAMES:
            return
        for buffer in (self._starts, self._rows, self._means):
            buffer.drop_front(drop)
        self._base += drop
