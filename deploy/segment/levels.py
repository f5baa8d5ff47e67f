"""Short-term audio levels for the arc gate: pure functions over whole frames.

Every function takes mono float32 samples whose length is a whole number of frames (the
caller buffers the remainder) and returns one level per frame in dB relative to full scale
(a full-scale sine reads -3.0 dBFS), never below ``LEVEL_FLOOR_DB``. The maths is vectorised
over frames so that one call per audio block costs one FFT per frame and no Python loop.

``BandMeter`` holds what does not change between blocks (the Hann window and the per-bin
band weights), so a streaming caller pays for them once instead of once per block (the gate
calls it 10 times a second per station; docs/benchmarks.md, "Monitor: segmentation cost").
"""

from __future__ import annotations

import functools

import numpy as np

# Lowest level ever reported (dBFS). 16-bit audio cannot go below about -101 dBFS, so a
# floor well under that keeps digital silence finite (log10(0)) without touching real
# signal; it also keeps the gate's maths free of -inf.
LEVEL_FLOOR_DB = -120.0
_FLOOR_POWER = 10.0 ** (LEVEL_FLOOR_DB / 10.0)


def _frames(samples: np.ndarray, frame_len: int) -> np.ndarray:
    """View ``samples`` as [n_frames, frame_len]; the length must be a multiple."""
    if frame_len <= 0:
        raise ValueError(f"frame_len must be positive, got {frame_len}")
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"samples must be mono (1-D), got shape {x.shape}")
    if x.size % frame_len:
        raise ValueError(f"{x.size} samples are not a whole number of {frame_len}-sample frames")
    return x.reshape(-1, frame_len)


def power_to_db(power: np.ndarray) -> np.ndarray:
    """Mean-square power (full scale = 1.0) to dBFS, floored at ``LEVEL_FLOOR_DB``."""
    return np.asarray(10.0 * np.log10(np.maximum(power, _FLOOR_POWER)), dtype=np.float64)


def frame_power(samples: np.ndarray, frame_len: int) -> np.ndarray:
    """Mean-square power of each whole frame (broadband), full scale = 1.0."""
    fr = _frames(samples, frame_len).astype(np.float64)
    return np.asarray(np.mean(fr * fr, axis=1))


def frame_rms_db(samples: np.ndarray, frame_len: int) -> np.ndarray:
    """Broadband short-term level (RMS in dBFS) of each whole frame."""
    return power_to_db(frame_power(samples, frame_len))


class BandMeter:
    """Mean-square power of whole frames inside ``[low_hz, high_hz)``, for one frame length.

    Hann-windowed FFT per frame, scaled (Parseval, window power divided out) so that a sine
    inside the band reads its own mean-square power, as ``frame_power`` would. The window
    keeps loud low-frequency machine noise from leaking into a high band through spectral
    sidelobes. Immutable once built; safe to share between stations.
    """

    def __init__(self, frame_len: int, sample_rate: int, low_hz: float, high_hz: float) -> None:
        if frame_len <= 0:
            raise ValueError(f"frame_len must be positive, got {frame_len}")
        if not 0.0 <= low_hz < high_hz:
            raise ValueError(f"need 0 <= low_hz < high_hz, got {low_hz}, {high_hz}")
        self.frame_len = frame_len
        # Periodic Hann: no zero at the frame's last sample.
        self._window = np.hanning(frame_len + 1)[:-1]
        # One-sided spectrum: every bin but DC (and Nyquist for even lengths) stands for two.
        weights = np.full(frame_len // 2 + 1, 2.0)
        weights[0] = 1.0
        if frame_len % 2 == 0:
            weights[-1] = 1.0
        freqs = np.fft.rfftfreq(frame_len, 1.0 / sample_rate)
        weights[(freqs < low_hz) | (freqs >= high_hz)] = 0.0
        weights /= frame_len * float(np.sum(self._window * self._window))
        # The band mask and the Parseval scale folded into one weight per real and imaginary
        # part (the complex spectrum viewed as interleaved float64): the band power is then
        # one square and one weighted row sum per block.
        self._weights = np.repeat(weights, 2)

    def power(self, samples: np.ndarray) -> np.ndarray:
        """Band power of each whole frame of ``samples`` (float64 [n_frames])."""
        fr = _frames(samples, self.frame_len)
        spec = np.fft.rfft(fr * self._window, axis=1)  # float32 * float64 window -> float64
        parts = np.square(spec.view(np.float64))  # [n_frames, 2 * bins]: re^2, im^2, ...
        # einsum, not a BLAS matrix product: each row is summed in the same order whatever the
        # number of rows, so a frame's level does not depend on how the stream was blocked.
        return np.asarray(np.einsum("ij,j->i", parts, self._weights))

    measure = power  # the `deploy.segment.protocol.Meter` seam: the gate decides on band power


@functools.lru_cache(maxsize=16)
def band_meter(frame_len: int, sample_rate: int, low_hz: float, high_hz: float) -> BandMeter:
    """The shared ``BandMeter`` for these settings (built once, reused by every station)."""
    return BandMeter(frame_len, sample_rate, low_hz, high_hz)


def band_power(
    samples: np.ndarray, frame_len: int, sample_rate: int, low_hz: float, high_hz: float
) -> np.ndarray:
    """Mean-square power of each whole frame inside ``[low_hz, high_hz)``; see ``BandMeter``."""
    return band_meter(frame_len, sample_rate, float(low_hz), float(high_hz)).power(samples)


def frame_band_db(
    samples: np.ndarray, frame_len: int, sample_rate: int, low_hz: float, high_hz: float
) -> np.ndarray:
    """Band-limited short-term level (dBFS) of each whole frame; see ``BandMeter``."""
    return power_to_db(band_power(samples, frame_len, sample_rate, low_hz, high_hz))
