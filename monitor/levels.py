"""Short-term audio levels for the arc gate: pure functions over whole frames.

Every function takes mono float32 samples whose length is a whole number of frames (the
caller buffers the remainder) and returns one level per frame in dB relative to full scale
(a full-scale sine reads -3.0 dBFS), never below ``LEVEL_FLOOR_DB``. The maths is vectorised
over frames so that one call per audio block costs one FFT per frame and no Python loop.
"""

from __future__ import annotations

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
    return (10.0 * np.log10(np.maximum(power, _FLOOR_POWER))).astype(np.float64)


def frame_power(samples: np.ndarray, frame_len: int) -> np.ndarray:
    """Mean-square power of each whole frame (broadband), full scale = 1.0."""
    fr = _frames(samples, frame_len).astype(np.float64)
    return np.mean(fr * fr, axis=1)


def frame_rms_db(samples: np.ndarray, frame_len: int) -> np.ndarray:
    """Broadband short-term level (RMS in dBFS) of each whole frame."""
    return power_to_db(frame_power(samples, frame_len))


def band_power(
    samples: np.ndarray, frame_len: int, sample_rate: int, low_hz: float, high_hz: float
) -> np.ndarray:
    """Mean-square power of each whole frame inside ``[low_hz, high_hz)``.

    Hann-windowed FFT per frame, scaled (Parseval, window power divided out) so that a sine
    inside the band reads its own mean-square power, as ``frame_power`` would. The window keeps
    loud low-frequency machine noise from leaking into a high band through spectral sidelobes.
    """
    if not 0.0 <= low_hz < high_hz:
        raise ValueError(f"need 0 <= low_hz < high_hz, got {low_hz}, {high_hz}")
    fr = _frames(samples, frame_len).astype(np.float64)
    window = np.hanning(frame_len + 1)[:-1]  # periodic Hann: no zero at the frame's last sample
    spec = np.fft.rfft(fr * window, axis=1)
    energy = spec.real**2 + spec.imag**2
    # One-sided spectrum: every bin but DC (and Nyquist for even lengths) stands for two.
    energy[:, 1:] *= 2.0
    if frame_len % 2 == 0:
        energy[:, -1] /= 2.0
    freqs = np.fft.rfftfreq(frame_len, 1.0 / sample_rate)
    in_band = (freqs >= low_hz) & (freqs < high_hz)
    return energy[:, in_band].sum(axis=1) / (frame_len * np.sum(window * window))


def frame_band_db(
    samples: np.ndarray, frame_len: int, sample_rate: int, low_hz: float, high_hz: float
) -> np.ndarray:
    """Band-limited short-term level (dBFS) of each whole frame; see ``band_power``."""
    return power_to_db(band_power(samples, frame_len, sample_rate, low_hz, high_hz))
