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
  the arc: bins more than ``tone_clip_db`` over the band's median bin are clipped to that
  before the band-passed frame is formed. A tone is a few bins, an arc's pops spread over
  all of them, so the clip takes the tone and leaves the crackle (a per-station tracked
  whitening did much the same but needs state, so stations could not share one call);
- a frame edge would cut loud low-frequency sound into clicks: frames are Hann-windowed,
  and the window's own effect on the 4th moment (a windowed Gaussian reads 5.8) is divided
  out, so noise reads 3 again.

The meter is stateless and shared: ``measure`` gives every frame's band powers, log10
kurtosis and silence flag, one FFT and one inverse FFT per frame, for any number of
stations' frames in one call. Row reductions use ``einsum``, which sums each row in the same
order however many rows there are, and each frame is measured on its own, so values do not
depend on the block size.
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
# Total profile-band power (mean square, full scale 1) under which a frame is digital
# silence: -115 dBFS, as the arc gate's SILENCE_DB (under any real room, over exact zeros).
SILENCE_POWER = 10.0 ** (-115.0 / 10.0)


class CrackleMeter:
    """Windowed spectra of whole frames, and what a station makes of them (band powers, the
    band-passed frame's moments). Immutable; one instance serves every station of a rate."""

    def __init__(
        self,
        frame_len: int,
        sample_rate: int,
        low_hz: float = 2000.0,
        high_hz: float = 8000.0,
        tone_clip_db: float | None = 10.0,
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
        in_band = np.flatnonzero((freqs >= low_hz) & (freqs < high_hz))
        if in_band.size == 0:
            raise ValueError(f"no FFT bin in {low_hz}-{high_hz} Hz at {sample_rate} Hz")
        self._band = slice(int(in_band[0]), int(in_band[-1]) + 1)
        self._clip = None if tone_clip_db is None else 10.0 ** (tone_clip_db / 10.0)
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
        """How many profile bands each measured row holds."""
        return int(self.band_weights.shape[1])

    def measure(self, samples: np.ndarray) -> np.ndarray:
        """Each whole frame of ``samples`` as one row (float64 [frames, profile_bands + 2]):
        its profile band powers (mean square), log10 of its crackle band's kurtosis, and 1.0
        where it is digital silence (0.0 elsewhere)."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1 or x.size % self.frame_len:
            raise ValueError(
                f"need a flat whole number of {self.frame_len}-sample frames, got {x.shape}"
            )
        spectra = np.fft.rfft(x.reshape(-1, self.frame_len) * self._window, axis=1)
        power = spectra.real**2 + spectra.imag**2
        out = np.empty((spectra.shape[0], self.profile_bands + 2))
        bands = out[:, : self.profile_bands]
        bands[:] = np.einsum("ij,jk->ik", power, self.band_weights)
        out[:, -1] = np.einsum("ij->i", bands) < SILENCE_POWER
        out[:, -2] = np.log10(np.maximum(self.kurtosis(spectra, power), 1e-3))
        return out

    def split(self, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(band powers, log10 kurtosis, silent) of rows from ``measure``."""
        b = self.profile_bands
        return measured[:, :b], measured[:, b], measured[:, b + 1] > 0.5

    def kurtosis(self, spectra: np.ndarray, power: np.ndarray) -> np.ndarray:
        """Kurtosis of each frame's crackle band (its steady tones clipped), the window's
        effect divided out: 3 for Gaussian noise. Frames with no power in it read 3."""
        band = spectra[:, self._band]
        if self._clip is not None:
            p = power[:, self._band]
            limit = self._clip * np.median(p, axis=1, keepdims=True)
            band = band * np.sqrt(np.minimum(1.0, limit / np.maximum(p, 1e-300)))
        full = np.zeros_like(spectra)
        full[:, self._band] = band
        y = np.fft.irfft(full, self.frame_len, axis=1)
        y2 = y * y
        m2 = np.einsum("ij->i", y2)
        m4 = np.einsum("ij,ij->i", y2, y2)
        k = (m4 * (self.frame_len / self._kurtosis_scale)) / np.maximum(m2 * m2, 1e-300)
        return np.where(m2 > 0.0, k, 3.0)


@functools.lru_cache(maxsize=16)
def crackle_meter(
    frame_len: int, sample_rate: int, low_hz: float, high_hz: float, tone_clip_db: float | None
) -> CrackleMeter:
    """The shared ``CrackleMeter`` for these settings (built once, reused by every station)."""
    return CrackleMeter(frame_len, sample_rate, low_hz, high_hz, tone_clip_db)
