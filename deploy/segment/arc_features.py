"""What the learned arc segmenter hears in each 50 ms frame: features that need no tuning at a
new cell, computed causally with a short look-ahead.

The frames are measured by the crackle segmenter's stateless meter (``crackle_meter``: per
profile band its mean-square power, and the 2-8 kHz band's log10 kurtosis), so stations share
one call. `ArcFeatures` keeps one station's little state and turns each measured frame into
one feature row once ``lookahead`` frames after it have arrived:

- each profile band's level over its own noise floor (dB), averaged over the frame's span
  (``behind`` frames before it, ``lookahead`` after). The floor follows the band's quietest
  span level down at once and rises by ``floor_rise_db_s`` at most: a weld of half a minute
  lifts it by 3 dB, a changed room is followed within a minute. Levels relative to a floor do
  not depend on microphone gain or distance;
- the 2-8 kHz arc band's level over its floor, and how far it lies under its own recent peak
  (a peak that sinks by ``peak_decay_db_s``): another cell's weld heard after ours is quieter
  than ours was;
- the spectral shape (each band's span level minus their mean): gain-free, and an arc's
  shape is not a grinder's or a fan's;
- the crackle: the span's mean, largest and smallest log10 kurtosis (3 for any steady noise);
- the modulation: the standard deviation of the arc band's frame levels over the span;
- one-second memories (exponential means) of the arc band's level over its floor and of the
  crackle: a weld's own arc has been going on;
- the distance of the frame's spectral shape from the shape of the loud arc heard lately: an
  arc that only turned quieter (a fading tail) keeps its shape, another cell's arc does not.

Rows do not depend on how the stream is blocked: windows are reduced element by element in a
fixed order and the memories step once per frame. The stream's first and last frames are
padded with copies of the nearest real frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from deploy.segment.crackle_meter import POWER_FLOOR, CrackleMeter, crackle_meter

FRAME_S = 0.05  # the frame the features are measured on (s)
ARC_BAND_LOW_HZ = 2000.0  # the arc band (crackle, arc level): where a MAG arc stands out most
ARC_BAND_HIGH_HZ = 8000.0
TONE_CLIP_DB = 10.0  # a steady tone in the arc band is clipped before the kurtosis (see meter)
EXCESS_MAX_DB = 60.0  # a level over its floor is clipped here (further says nothing more)
PROFILE_DB = 6.0  # frames this close to the arc band's recent peak shape the arc's profile
PROFILE_MIN_DB = 10.0  # ... when at least this far over the floor (an arc, not the room)


@dataclass(frozen=True)
class FeatureConfig:
    """How frames become feature rows; stored in the artifact, so a model is always fed the
    features it was trained on."""

    sample_rate: int = 16_000  # Hz: the model rate the station's stream arrives at
    frame_s: float = FRAME_S
    behind: int = 4  # frames before the frame in its span
    lookahead: int = 5  # frames after it: the look-ahead (0.25 s at 50 ms)
    floor_rise_db_s: float = 0.1  # how fast a band's noise floor may rise (dB/s)
    peak_decay_db_s: float = 0.5  # how fast the arc band's recent peak sinks (dB/s)
    memory_s: float = 1.0  # time constant of the one-second memories (s)

    @property
    def frame_len(self) -> int:
        """Samples per frame."""
        return round(self.frame_s * self.sample_rate)

    @property
    def span(self) -> int:
        """Frames in one frame's span (behind + itself + look-ahead)."""
        return self.behind + 1 + self.lookahead

    def meter(self) -> CrackleMeter:
        """The shared stateless meter the frames are measured with."""
        return crackle_meter(
            self.frame_len, self.sample_rate, ARC_BAND_LOW_HZ, ARC_BAND_HIGH_HZ, TONE_CLIP_DB
        )

    def as_dict(self) -> dict[str, float | int]:
        """The settings as plain JSON values."""
        return asdict(self)


def feature_names(bands: int) -> list[str]:
    """Names of a row's columns, for ``bands`` profile bands."""
    return (
        [f"excess_db_{k}" for k in range(bands)]
        + ["arc_excess_db", "arc_under_peak_db"]
        + [f"shape_db_{k}" for k in range(bands)]
        + ["log_kurtosis_mean", "log_kurtosis_max", "log_kurtosis_min", "arc_level_std_db"]
        + ["arc_excess_memory_db", "log_kurtosis_memory", "shape_distance_db"]
    )


class ArcFeatures:
    """One station's feature state: `push` measured rows (``CrackleMeter.measure``), get the
    feature rows of every frame whose look-ahead is complete; `flush` at the stream's end."""

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        meter = config.meter()
        self.bands = meter.profile_bands
        # The arc band's profile bands (2-8 kHz): their powers sum to the arc band's power.
        edges = meter.profile_edges_hz
        self._arc = np.array([lo >= ARC_BAND_LOW_HZ for lo in edges[:-1]])
        self.width = len(feature_names(self.bands))
        self._rows = np.zeros((0, self.bands + 2))  # measured rows not yet past every span
        self._started = False
        self._floor: np.ndarray | None = None  # per profile band, then the arc band (dB)
        self._peak = -math.inf
        self._memory = np.zeros(2)
        self._memory_started = False
        self._profile: np.ndarray | None = None  # spectral shape of the loud arc heard lately
        self._rise = config.floor_rise_db_s * config.frame_s
        self._decay = config.peak_decay_db_s * config.frame_s
        self._alpha = 1.0 - math.exp(-config.frame_s / config.memory_s)

    def push(self, measured: np.ndarray) -> np.ndarray:
        """Feature rows [frames, width] of every frame whose look-ahead ``measured`` completes."""
        if measured.shape[0] == 0:
            return np.zeros((0, self.width))
        if not self._started:
            # The first frame stands in for the frames before the stream.
            self._rows = np.repeat(measured[:1], self.config.behind, axis=0)
            self._started = True
        self._rows = np.concatenate((self._rows, measured))
        return self._ready()

    def flush(self) -> np.ndarray:
        """Feature rows of the frames still waiting for look-ahead (the last frame stands in
        for the frames after the stream)."""
        if not self._started or self._rows.shape[0] <= self.config.behind:
            return np.zeros((0, self.width))
        pad = np.repeat(self._rows[-1:], self.config.lookahead, axis=0)
        self._rows = np.concatenate((self._rows, pad))
        out = self._ready()
        self._rows = self._rows[:0]
        return out

    def _ready(self) -> np.ndarray:
        cfg = self.config
        rows = self._rows
        n = rows.shape[0] - cfg.span + 1
        if n <= 0:
            return np.zeros((0, self.width))
        power = rows[:, : self.bands]
        arc_power = np.einsum("ij,j->i", power, self._arc.astype(np.float64))
        logk = rows[:, self.bands]
        silent = rows[:, self.bands + 1] > 0.5
        span = cfg.span
        band_db = 10.0 * np.log10(np.maximum(_span_sum(power, span, n) / span, POWER_FLOOR))
        arc_db = 10.0 * np.log10(np.maximum(_span_sum(arc_power, span, n) / span, POWER_FLOOR))
        frame_arc_db = 10.0 * np.log10(np.maximum(arc_power, POWER_FLOOR))
        arc_mean = _span_sum(frame_arc_db, span, n) / span
        arc_var = _span_sum(np.square(frame_arc_db), span, n) / span - np.square(arc_mean)
        k_w = np.lib.stride_tricks.sliding_window_view(logk, span)
        silent_w = np.asarray(np.lib.stride_tricks.sliding_window_view(silent, span).any(axis=-1))
        levels = np.concatenate((band_db, arc_db[:, None]), axis=1)
        excess = self._excess(levels, silent_w)
        band_mean = _span_sum(band_db.T, self.bands, 1)[0] / self.bands
        out = np.empty((n, self.width))
        b = self.bands
        out[:, :b] = excess[:, :b]
        out[:, b] = excess[:, b]
        out[:, b + 2 : 2 * b + 2] = band_db - band_mean[:, None]
        out[:, 2 * b + 2] = _span_sum(logk, span, n) / span
        out[:, 2 * b + 3] = k_w.max(axis=-1)
        out[:, 2 * b + 4] = k_w.min(axis=-1)
        out[:, 2 * b + 5] = np.sqrt(np.maximum(arc_var, 0.0))
        self._memories(excess[:, b], out[:, 2 * b + 2], out, b)
        self._shape_distance(excess[:, b], out, b)
        self._rows = rows[n:]
        return out

    def _excess(self, levels: np.ndarray, silent: np.ndarray) -> np.ndarray:
        """Each level over its floor (dB, clipped to [0, EXCESS_MAX_DB]); steps the floors.
        A span that holds digital silence says nothing about the room: it leaves them be."""
        out = np.empty_like(levels)
        floor = self._floor
        for i in range(levels.shape[0]):
            lv = levels[i]
            if floor is None:
                floor = lv.copy()
            elif not silent[i]:
                floor = np.minimum(lv, floor + self._rise)
            out[i] = lv - floor
        self._floor = floor
        return np.asarray(np.clip(out, 0.0, EXCESS_MAX_DB))

    def _shape_distance(self, arc_excess: np.ndarray, out: np.ndarray, b: int) -> None:
        """How far each frame's spectral shape lies from the loud arc heard lately (RMS dB over
        the bands): an arc that only turned quieter keeps its shape, another cell's does not.
        The profile follows frames within ``PROFILE_DB`` of the recent peak and at least
        ``PROFILE_MIN_DB`` over the floor, with the one-second memory."""
        profile, a = self._profile, self._alpha
        for i in range(arc_excess.shape[0]):
            shape = out[i, b + 2 : 2 * b + 2]
            out[i, 2 * b + 8] = (
                0.0 if profile is None else math.sqrt(float(np.mean(np.square(shape - profile))))
            )
            if arc_excess[i] >= PROFILE_MIN_DB and out[i, b + 1] >= -PROFILE_DB:
                profile = shape.copy() if profile is None else profile + a * (shape - profile)
        self._profile = profile

    def _memories(self, arc_excess: np.ndarray, logk: np.ndarray, out: np.ndarray, b: int) -> None:
        """The arc band's level under its recent peak, and the one-second memories."""
        peak, mem, a = self._peak, self._memory, self._alpha
        for i in range(arc_excess.shape[0]):
            e = float(arc_excess[i])
            peak = max(e, peak - self._decay)
            if not self._memory_started:
                mem = np.array([e, float(logk[i])])
                self._memory_started = True
            else:
                mem = mem + a * (np.array([e, float(logk[i])]) - mem)
            out[i, b + 1] = e - peak
            out[i, 2 * b + 6] = mem[0]
            out[i, 2 * b + 7] = mem[1]
        self._peak, self._memory = peak, mem


def _span_sum(x: np.ndarray, span: int, n: int) -> np.ndarray:
    """Sums of ``span`` consecutive rows of ``x`` for its first ``n`` starts, added one row at a
    time: every window is summed in the same order whatever ``n`` (numpy's own reductions pick
    their order by shape, which would let a block's size move the last bit)."""
    acc = x[:n].copy()
    for i in range(1, span):
        acc += x[i : i + n]
    return acc


def recording_features(samples: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows of a whole mono recording at ``config.sample_rate`` and each row's frame
    start (samples); the trailing partial frame is dropped. The very rows the streaming
    segmenter computes."""
    frame_len = config.frame_len
    x = np.asarray(samples, dtype=np.float32)
    n = x.size // frame_len * frame_len
    feats = ArcFeatures(config)
    rows = feats.push(config.meter().measure(x[:n]))
    rows = np.concatenate((rows, feats.flush()))
    return rows, np.arange(rows.shape[0]) * frame_len
