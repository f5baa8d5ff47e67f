"""Arc segmenter: weld start and end from a learned per-frame arc classifier, block by block.

One ``ArcSegmenter`` per station. Each 50 ms frame is measured by the shared crackle meter,
turned into features (``arc_features``: levels over the station's own noise floor, spectral
shape, crackle, modulation; 0.25 s look-ahead) and given a probability that the arc burns
(``arc_model``: a tiny MLP trained on the arc current of current-logged recordings,
``weldmon train-segmenter``). The probabilities become welds with hysteresis in level and
time (docs/segmentation.md):

1. Candidate: opens at the first frame with p >= ``on_p``; it goes on while p >= ``off_p``
   and is discarded (``discarded_bursts``) once p stayed under it for ``hangover_s``.
2. Start: once the candidate has lasted ``confirm_s``, a ``start`` boundary is emitted at its
   first frame. A strike is decided ``confirm_s`` + the look-ahead after it (0.75 s).
3. End: a weld ends at its last frame with p >= ``off_p`` once ``hangover_s`` of frames under
   it followed (bridged stretches become the end's dropouts), or is cut at ``max_weld_s``
   (``forced_ends``; then p must fall under ``off_p`` before a new weld may start).

Results do not depend on how the stream is cut into blocks; ``segment_welds`` in
``deploy.segment.offline`` runs this very class over a whole recording.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from deploy.segment.arc_features import ArcFeatures
from deploy.segment.arc_model import ArcModel, cached_arc_model
from deploy.segment.framing import FrameGrid
from deploy.segment.protocol import Boundary, Dropout, Frames, SegmentationError, Segmenter
from deploy.strict_model import StrictModel


class ArcParams(StrictModel):
    """Arc-segmenter settings: the model, and how its probabilities become welds. The
    defaults need no tuning at a new cell (leave-one-setup-out figures: docs/segmentation.md)."""

    model: Path | None = Field(
        None,
        description="The classifier artifact (`weldmon train-segmenter --out`); None: the one "
        "shipped with weldmon, trained on the 23 shared recordings.",
    )
    on_p: float = Field(
        0.5, gt=0.0, lt=1.0, description="Arc probability that opens a candidate weld."
    )
    off_p: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="Arc probability under which a frame counts as off (hysteresis: under "
        "on_p, so a weld's flicker does not chatter).",
    )
    confirm_s: float = Field(
        0.5,
        gt=0.0,
        description="How long a candidate must go on before it is a weld (s): shorter bursts "
        "(clicks, a dropped part) are discarded. The start is decided this long plus the "
        "0.25 s look-ahead after the strike.",
    )
    hangover_s: float = Field(
        1.0,
        ge=0.0,
        description="How long the arc must stay off before a weld ends (s): bridges the arc's "
        "dropouts (a burn-through's run 0.5-0.9 s; the arc current's own truth bridges "
        "dropouts under 1 s). The end is decided this long plus the 0.25 s look-ahead after "
        "the weld's last on-frame.",
    )
    max_weld_s: float = Field(
        600.0,
        gt=0.0,
        description="Longest weld (s) before the segmenter forces an end (a stuck-on sound "
        "cannot hold a weld open forever).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ArcParams:
        if self.off_p > self.on_p:
            raise ValueError(f"off_p ({self.off_p}) must not exceed on_p ({self.on_p})")
        if self.confirm_s > self.max_weld_s:
            raise ValueError(
                f"confirm_s ({self.confirm_s}) must not exceed max_weld_s ({self.max_weld_s})"
            )
        return self


class _State(Enum):
    IDLE = "idle"
    CANDIDATE = "candidate"
    WELD = "weld"
    LOCKOUT = "lockout"  # after a forced end, until the arc is off


class ArcSegmenter(Segmenter):
    """Streaming learned arc segmenter for one station; see the module docstring."""

    def __init__(self, params: ArcParams, sample_rate: int, model: ArcModel | None = None) -> None:
        """``model``: the loaded classifier (default: loaded from ``params.model``); raises
        ArcModelError for a bad artifact, SegmentationError for a rate it was not trained at."""
        model = model if model is not None else cached_arc_model(params.model)
        if sample_rate != model.config.sample_rate:
            raise SegmentationError(
                f"the arc model was trained at {model.config.sample_rate} Hz; the station's "
                f"stream is at {sample_rate} Hz"
            )
        self.params = params
        self.model = model
        self.sample_rate = sample_rate
        self._frame_len = model.config.frame_len
        self._meter = model.config.meter()
        self._features = ArcFeatures(model.config)
        self._grid = FrameGrid(self._frame_len)
        self._starts: list[int] = []  # frame starts whose features wait for look-ahead
        self._confirm = round(params.confirm_s * sample_rate)
        self._hangover = round(params.hangover_s * sample_rate)
        self._max_weld = round(params.max_weld_s * sample_rate)
        self._state = _State.IDLE
        self._first = 0  # the candidate's / weld's first sample
        self._last_on_end = 0  # one past the latest on-frame
        self._dropouts: list[Dropout] = []
        self.discarded_bursts = 0  # candidates that never became a weld
        self.forced_ends = 0  # welds cut at max_weld_s
        # Read-only hook for `weldmon segment --plot`: when a list, each decided frame adds
        # (its first sample, its arc probability, on_p). Never read here.
        self.trace: list[tuple[int, float, float]] | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def in_weld(self) -> bool:
        """True between a start boundary and its end boundary."""
        return self._state is _State.WELD

    @property
    def lookback_samples(self) -> int:
        """Upper bound on how far a start lies before the end of the latest block: the
        confirmation with a hang-over's gap inside it, the look-ahead and a partial frame."""
        frames = (self._confirm + self._hangover) // self._frame_len
        frames += self.model.config.lookahead + 3
        return frames * self._frame_len

    @property
    def arc_confirmed_until(self) -> int:
        """The end of the weld's latest on-frame: its end (after the hang-over, forced or at
        the stream's close) lies at or after it."""
        return self._last_on_end if self._state is _State.WELD else 0

    @property
    def gap_samples(self) -> int:
        """Samples missing between blocks (the frame grid restarted after each gap)."""
        return self._grid.gap_samples

    def take(self, samples: np.ndarray, start_index: int) -> Frames:
        """Buffer the block and return the whole frames it completes (measured by the
        shared meter; the rows go to ``decide`` before the next block)."""
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
        self._starts.extend(grid.frame_starts)
        grid.frame_starts = []
        return self._step_rows(self._features.push(measured))

    def close(self, end_index: int) -> list[Boundary]:
        """The stream ends at ``end_index`` (one past its last sample): decides the frames
        still waiting for their look-ahead and closes an open weld there."""
        if self._grid.closed:
            return []
        self._grid.closed = True
        out = self._step_rows(self._features.flush())
        if self._state is _State.WELD:
            self._end(min(self._last_on_end, end_index), out, forced=False)
        self._state = _State.IDLE
        return out

    # -- internals --------------------------------------------------------------------------

    def _step_rows(self, rows: np.ndarray) -> list[Boundary]:
        out: list[Boundary] = []
        if rows.shape[0] == 0:
            return out
        p = self.model.probability(rows)
        starts, self._starts = self._starts[: rows.shape[0]], self._starts[rows.shape[0] :]
        if self.trace is not None:
            self.trace.extend(
                (s, float(v), self.params.on_p) for s, v in zip(starts, p, strict=True)
            )
        for start, prob in zip(starts, p.tolist(), strict=True):
            self._step(start, prob, out)
        return out

    def _step(self, start: int, p: float, out: list[Boundary]) -> None:
        """One frame through the state machine."""
        end = start + self._frame_len
        params = self.params
        state = self._state
        if state is _State.IDLE:
            if p >= params.on_p:
                self._state = _State.CANDIDATE
                self._first, self._last_on_end = start, end
                self._dropouts = []
                self._try_confirm(end, out)
        elif state is _State.CANDIDATE:
            if p >= params.off_p:
                self._on(start, end)
                self._try_confirm(end, out)
            elif end - self._last_on_end >= self._hangover:
                self._state = _State.IDLE
                self.discarded_bursts += 1
        elif state is _State.WELD:
            if p >= params.off_p:
                self._on(start, end)
            elif end - self._last_on_end >= self._hangover:
                self._end(self._last_on_end, out, forced=False)
            if self._state is _State.WELD and end - self._first >= self._max_weld:
                self.forced_ends += 1
                self._end(end, out, forced=True)
                self._state = _State.LOCKOUT
        elif p < params.off_p:  # LOCKOUT
            self._state = _State.IDLE

    def _on(self, start: int, end: int) -> None:
        if start > self._last_on_end:
            self._dropouts.append(Dropout(self._last_on_end, start))
        self._last_on_end = end

    def _try_confirm(self, end: int, out: list[Boundary]) -> None:
        if end - self._first >= self._confirm:
            self._state = _State.WELD
            out.append(Boundary("start", max(self._grid.stream_start, self._first)))

    def _end(self, end: int, out: list[Boundary], forced: bool) -> None:
        dropouts = tuple(d for d in self._dropouts if d.end <= end)
        out.append(Boundary("end", end, forced=forced, dropouts=dropouts))
        self._state = _State.IDLE
        self._dropouts = []
