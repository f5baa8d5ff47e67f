"""What the crackle segmenter measures in each frame: the arc's crackle and its band levels.

A welding arc crackles: short-circuit transfers and spatter make its 2-8 kHz sound far more
impulsive than any steady noise. The measure of that is the kurtosis of the band-passed
frame (4th moment over squared 2nd moment): Gaussian noise reads 3 whatever its level and
colour, the 23 shared arcs 14-160 as recorded and still 4-110 under white or pink noise as
loud as the arc itself, while the wire-feed creep before ignition and post-weld fume
extraction stay at 3. It needs no noise floor and no threshold relative to one, so gain
does not matter, and a quiet cell crackles as much as a loud one.

Two things spoil a plain kurtosis, and the meter removes both:

- a steady tone inside the band (a drive's whine) is sub-Gaussian (kurtosis 1.5) and masks
  the arc: each station whitens its spectrum by its own slowly tracked per-bin background
  (``Whitener``) before the band-passed frame is formed, so a tone weighs no more than one
  bin of noise;
- a frame edge would cut loud low-frequency sound into clicks: frames are Hann-windowed,
  and the window's own effect on the 4th moment (a windowed Gaussian reads 5.8) is divided
  out, so noise reads 3 again.

The meter is stateless and shared: ``measure`` is one FFT per frame for any number of
stations' frames at once; the per-station, stateful part (the whitener and the moments)
runs in ``CrackleSegmenter.decide``. Row reductions use ``einsum``, which sums each row in
the same order however many rows there are, so values do not depend on the block size.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

# Band-level profile the segmenter compares a weld against (Hz, band edges). Octaves up to
# 2 kHz, then 1-2 kHz wide bands where the arc dominates the sound.
PROFILE_EDGES_HZ = (250.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0)
# Smallest mean-square power (full scale = 1) a frame's band may read: keeps log10 finite on
# digital silence, far under 16-bit audio's own floor (about -101 dBFS).
POWER_FLOOR = 1e-12
# Background power per bin (windowed spectrum units) the whitener never goes under, so that
# digital silence cannot drive its gain to overflow.
WHITEN_FLOOR = 1e-20


class CrackleMeter:
    """Windowed spectra of whole frames, and what a station makes of them (band powers, the
    band-passed frame's moments). Immutable; one instance serves every station of a rate."""

    def __init__(
        self, frame_len: int, sample_rate: int, low_hz: float = 2000.0, high_hz: float = 8000.0
    ) -> None:
        if frame_len <= 0 or sample_rate <= 0:
            raise ValueError(
                f"frame_len and sample_rate must be positive: {frame_len}, {sample_rate}"
            )
        if not 0.0 <= low_hz < high_hz:
            raise ValueError(f"need 0 <= low_hz < high_hz, got {low_hz}, {high_hz}")
        self.frame_len = frame_len
        self.sample_rate = sample_rate
        self._window = np.hanning(frame_len + 1)[:-1]  # periodic Hann
        freqs = np.fft.rfftfreq(frame_len, 1.0 / sample_rate)
        self.bins = freqs.size
        self.crackle_mask = ((freqs >= low_hz) & (freqs < high_hz)).astype(np.float64)
        # One-sided spectrum: every bin but DC (and Nyquist for even lengths) stands for two;
        # divided by the window's power (Parseval), so a sine reads its own mean square.
        side = np.full(freqs.size, 2.0)
        side[0] = 1.0
        if frame_len % 2 == 0:
            side[-1] = 1.0
        side /= frame_len * float(np.sum(self._window**2))
        edges = [e for e in PROFILE_EDGES_HZ if e <= sample_rate / 2.0]
        bands = [side * ((freqs >= lo) & (freqs < hi)) for lo, hi in itertools.pairwise(edges)]
        self.band_weights = np.stack(bands, axis=1)  # [bins, profile bands]
        self.profile_edges_hz = tuple(edges)
        w2 = float(np.mean(self._window**2))
        # A stationary signal's 4th moment over its squared 2nd moment, windowed, is its own
        # kurtosis times this factor (1.944 for Hann): dividing it out makes noise read 3.
        self._kurtosis_scale = float(np.mean(self._window**4)) / (w2 * w2)

    @property
    def profile_bands(self) -> int:
        """How many profile bands ``band_powers`` returns per frame."""
        return self.band_weights.shape[1]

    def measure(self, samples: np.ndarray) -> np.ndarray:
        """Windowed spectrum of each whole frame of ``samples`` (complex128 [frames, bins])."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1 or x.size % self.frame_len:
            raise ValueError(
                f"need a flat whole number of {self.frame_len}-sample frames, got {x.shape}"
            )
        return np.fft.rfft(x.reshape(-1, self.frame_len) * self._window, axis=1)

    def band_powers(self, power: np.ndarray) -> np.ndarray:
        """Mean-square power per profile band of each frame, from ``|spectrum|^2``
        (float64 [frames, bins] -> [frames, bands])."""
        return np.einsum("ij,jk->ik", power, self.band_weights)

    def kurtosis(self, spectra: np.ndarray, gain: np.ndarray) -> np.ndarray:
        """Kurtosis of each frame's crackle band after the per-bin ``gain`` (the whitener's),
        window effect divided out: 3 for Gaussian noise. Frames with no power in the band
        (digital silence) read 3."""
        y = np.fft.irfft(spectra * (self.crackle_mask * gain), self.frame_len, axis=1)
        y2 = y * y
        m2 = np.einsum("ij->i", y2)
        m4 = np.einsum("ij,ij->i", y2, y2)
        n = self.frame_len
        with np.errstate(divide="ignore", invalid="ignore"):
            k = (m4 * n) / (m2 * m2) / self._kurtosis_scale
        return np.where(m2 > 0.0, k, 3.0)


class Whitener:
    """One station's slowly tracked background power per bin (an exponential mean over every
    frame, arc included: whitening keeps an arc's impulsiveness whatever its spectrum) and
    the gain that flattens it. Stepped frame by frame so values do not depend on blocks."""

    def __init__(self, bins: int, frame_s: float, time_constant_s: float) -> None:
        self.enabled = time_constant_s > 0.0
        self._keep = float(np.exp(-frame_s / time_constant_s)) if self.enabled else 0.0
        self._background: np.ndarray | None = None
        self._ones = np.ones(bins)

    def gains(self, power: np.ndarray, silent: np.ndarray) -> np.ndarray:
        """Per-bin gain for each frame (from the background before it), then the frame is
        learnt; frames flagged ``silent`` (digital silence) are not learnt."""
        if not self.enabled:
            return np.broadcast_to(self._ones, power.shape)
        out = np.empty_like(power)
        for k in range(power.shape[0]):
            if self._background is None:
                self._background = np.maximum(power[k], WHITEN_FLOOR)
            out[k] = 1.0 / np.sqrt(self._background)
            if not silent[k]:
                self._background = np.maximum(
                    self._keep * self._background + (1.0 - self._keep) * power[k], WHITEN_FLOOR
                )
        return out


@functools.lru_cache(maxsize=16)
def crackle_meter(frame_len: int, sample_rate: int, low_hz: float, high_hz: float) -> CrackleMeter:
    """The shared ``CrackleMeter`` for these settings (built once, reused by every station)."""
    return CrackleMeter(frame_len, sample_rate, low_hz, high_hz)
