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


class FrameSmoother:
    """Raw frame measurements in (``push``), ``DecidedFrames`` out (``ready``)."""

    def __init__(self, crackle_half: int, level_half: int, median_half: int, bands: int) -> None:
        self.crackle_half = crackle_half
        self.level_half = level_half
        self.median_half = median_half
        # How many frames past a frame must have arrived before it can be decided.
        self.lookahead = max(crackle_half, level_half + median_half)
        self._keep = max(crackle_half, median_half + level_half) + level_half
        self._base = 0  # frame index of the first frame held
        self._starts = np.zeros(0, dtype=np.int64)
        self._log_k = np.zeros(0)
        self._powers = np.zeros((0, bands))
        self._silent = np.zeros(0, dtype=bool)
        self._means = np.zeros((0, bands))  # level-smoothed powers from frame self._base on
        self._next = 0  # the next frame to decide

    @property
    def pushed(self) -> int:
        """Frames pushed so far."""
        return self._base + self._log_k.size

    def push(
        self, starts: list[int], log_k: np.ndarray, powers: np.ndarray, silent: np.ndarray
    ) -> None:
        """Raw measurements of consecutive frames (their first samples, log10 kurtosis,
        band powers [frames, bands], digital-silence flags)."""
        self._starts = np.concatenate((self._starts, np.asarray(starts, dtype=np.int64)))
        self._log_k = np.concatenate((self._log_k, log_k))
        self._powers = np.concatenate((self._powers, powers))
        self._silent = np.concatenate((self._silent, silent))

    def ready(self, flush: bool) -> DecidedFrames | None:
        """The frames that can be decided now (all of them when ``flush``), or None."""
        end = self.pushed
        last = end if flush else end - self.lookahead  # one past the last frame to decide
        if last <= self._next:
            return None
        b = self._base
        lo, hi = self._next, last
        # Level means are needed up to hi + median_half; each is final once its own span
        # has arrived (or on flush), so it is computed exactly once.
        have = b + self._means.shape[0]
        want = end if flush else end - self.level_half
        if want > have:
            new = _centred_means(self._powers, have - b, want - b, self.level_half, end - b)
            self._means = np.concatenate((self._means, new))
        crackle = _centred_means(self._log_k, lo - b, hi - b, self.crackle_half, end - b)
        silent = self._silent[lo - b : hi - b].copy()
        levels = _centred_medians(
            self._means, lo - b, hi - b, self.median_half, self._means.shape[0]
        )
        means = self._means[lo - b : hi - b].copy()
        out = DecidedFrames(
            lo, self._starts[lo - b : hi - b].copy(), crackle, levels, silent, means
        )
        self._next = hi
        self._trim()
        return out

    def _trim(self) -> None:
        """Drop frames no span of an undecided frame reaches any more."""
        drop = self._next - self._keep - self._base
        if drop < TRIM_FRAMES:
            return
        self._starts = self._starts[drop:]
        self._log_k = self._log_k[drop:]
        self._powers = self._powers[drop:]
        self._silent = self._silent[drop:]
        self._means = self._means[drop:]
        self._base += drop
