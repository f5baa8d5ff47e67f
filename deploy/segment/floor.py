"""A factory floor made from real recordings: noise, a neighbouring cell, bursts, hum and gain.

The sounds the arc segmenter is trained with (``deploy.segment.arc_train``) and the
segmentation bench and tests score under (``tests/support/factory_floor.py`` builds its cases
from these). Everything is generated in memory from a seed. Levels are mean-square dBFS like
``levels``: a full-scale sine reads -3 dBFS, so ``10 ** (dbfs / 20)`` is the RMS of the added
signal. For orientation, the shared recordings' arcs are -48 to -52 dBFS broadband and their
idle floors -63 to -77 dBFS.

- ``pink_noise`` / ``white_noise``: stationary background (1/f from 20 Hz to Nyquist, or flat);
- ``hum_and_fan``: mains hum (50 Hz and harmonics), a fan's blade-pass tone and harmonics and
  its broadband rumble under 2 kHz;
- ``whine``: a steady tone inside the arc's band (a drive or transformer whine);
- ``grinder_bursts``: an angle grinder touching metal now and then (0.5-2.5 s bursts of
  rotation-modulated 1-8 kHz noise with the disc's rotation harmonics);
- ``impact_bursts``: hammer blows and dropped parts (decaying broadband clicks with ringing);
- ``with_neighbour``: another recording's weld (another cell heard through the air), padded
  with its own idle, time-shifted and scaled relative to the target's arc;
- ``gained``: gain in dB, clipped to full scale as a converter would;
- ``attenuated`` / ``ramped_in``: a stretch of the arc quieter (a fading tail), a soft strike.

Pure numpy (no torch, no monitor): training may import it.
"""

from __future__ import annotations

import numpy as np

from deploy.segment.levels import frame_band_db

PINK_LOW_HZ = 20.0  # pink noise below this carries no power (a microphone's low cut)
MAINS_HZ = 50.0
FAN_BLADE_PASS_HZ = 7 * 24.0  # 7 blades at 1,440 rpm
WHINE_HZ = 3150.0  # a steady tone inside the arc's 2-8 kHz band
GRINDER_ROTATION_HZ = 183.0  # 11,000 rpm, a 115 mm angle grinder


def _scaled(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return np.asarray(x * (10.0 ** (dbfs / 20.0) / max(rms, 1e-30)), dtype=np.float32)


def white_noise(n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise at ``dbfs`` (mean-square dBFS)."""
    return _scaled(rng.standard_normal(n), dbfs)


def pink_noise(n: int, rate: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f power spectrum from ``PINK_LOW_HZ`` to Nyquist, at ``dbfs``."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    shape = np.zeros_like(freqs)
    keep = freqs >= PINK_LOW_HZ
    shape[keep] = 1.0 / np.sqrt(freqs[keep])
    return _scaled(np.fft.irfft(spec * shape, n), dbfs)


def _lowpassed_noise(n: int, rate: int, high_hz: float, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[np.fft.rfftfreq(n, 1.0 / rate) >= high_hz] = 0.0
    return np.fft.irfft(spec, n)


def hum_and_fan(n: int, rate: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Mains hum (50 Hz and harmonics to 1 kHz, falling 3 dB per harmonic), a fan's blade-pass
    tone with 4 harmonics and the fan's broadband rumble under 2 kHz (10 dB under the tones),
    at ``dbfs`` in all. Phases are random, tones steady."""
    t = np.arange(n) / rate
    tones = np.zeros(n)
    for k in range(1, int(1000.0 // MAINS_HZ) + 1):
        amp = 10.0 ** (-3.0 * (k - 1) / 20.0)
        tones += amp * np.sin(2 * np.pi * MAINS_HZ * k * t + rng.uniform(0, 2 * np.pi))
    for k in range(1, 6):
        amp = 0.7 * 10.0 ** (-4.0 * (k - 1) / 20.0)
        tones += amp * np.sin(2 * np.pi * FAN_BLADE_PASS_HZ * k * t + rng.uniform(0, 2 * np.pi))
    rumble = _lowpassed_noise(n, rate, 2000.0, rng)
    tones_ms = float(np.mean(tones**2))
    rumble *= np.sqrt(tones_ms / 10.0 / max(float(np.mean(rumble**2)), 1e-30))
    return _scaled(tones + rumble, dbfs)


def whine(n: int, rate: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """A steady ``WHINE_HZ`` tone at ``dbfs``."""
    t = np.arange(n) / rate
    return _scaled(np.sin(2 * np.pi * WHINE_HZ * t + rng.uniform(0, 2 * np.pi)), dbfs)


def _burst_starts(
    n: int, rate: int, every_s: tuple[float, float], rng: np.random.Generator
) -> list[int]:
    starts, pos = [], rng.uniform(0.0, every_s[1]) * rate
    while pos < n:
        starts.append(int(pos))
        pos += rng.uniform(*every_s) * rate
    return starts


def grinder_bursts(n: int, rate: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Grinder touches: 0.5-2.5 s bursts every 4-9 s; each is 1-8 kHz noise whose amplitude is
    modulated 60 % at the disc's rotation, plus the rotation's first 6 harmonics, with 50 ms
    fades. ``dbfs`` is each burst's own level (mean square over the burst)."""
    out = np.zeros(n)
    for start in _burst_starts(n, rate, (4.0, 9.0), rng):
        length = min(n - start, int(rng.uniform(0.5, 2.5) * rate))
        if length < rate // 10:
            continue
        t = np.arange(length) / rate
        rot = GRINDER_ROTATION_HZ * rng.uniform(0.95, 1.05)
        spec = np.fft.rfft(rng.standard_normal(length))
        freqs = np.fft.rfftfreq(length, 1.0 / rate)
        spec[(freqs < 1000.0) | (freqs >= 8000.0)] = 0.0
        noise = np.fft.irfft(spec, length)
        noise *= 1.0 + 0.6 * np.sin(2 * np.pi * rot * t)
        tones = sum(
            10.0 ** (-3.0 * k / 20.0) * np.sin(2 * np.pi * rot * (k + 1) * t) for k in range(6)
        )
        burst = noise / np.sqrt(np.mean(noise**2)) + 0.5 * tones / np.sqrt(np.mean(tones**2))
        fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05)
        out[start : start + length] = _scaled(burst * fade, dbfs)
    return out.astype(np.float32)


def impact_bursts(n: int, rate: int, peak_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """Hammer blows and dropped parts every 1.5-5 s: a broadband click decaying with a 15-60 ms
    time constant plus two ringing modes between 1 and 6 kHz; ``peak_dbfs`` is the mean-square
    level of each impact's first 5 ms."""
    out = np.zeros(n)
    for start in _burst_starts(n, rate, (1.5, 5.0), rng):
        length = min(n - start, int(0.4 * rate))
        t = np.arange(length) / rate
        decay = np.exp(-t / rng.uniform(0.015, 0.06))
        ring = sum(
            np.sin(2 * np.pi * rng.uniform(1000.0, 6000.0) * t + rng.uniform(0, 2 * np.pi))
            for _ in range(2)
        )
        hit = (rng.standard_normal(length) + ring) * decay
        head = hit[: max(1, int(0.005 * rate))]
        hit *= 10.0 ** (peak_dbfs / 20.0) / max(float(np.sqrt(np.mean(head**2))), 1e-30)
        out[start : start + length] += hit
    return out.astype(np.float32)


def gained(x: np.ndarray, db: float) -> np.ndarray:
    """``x`` amplified by ``db`` and clipped to full scale."""
    return np.clip(x * np.float32(10.0 ** (db / 20.0)), -1.0, 1.0).astype(np.float32)


def padded_with_idle(x: np.ndarray, rate: int, idle_end_s: float, pad_s: float) -> np.ndarray:
    """``x`` with ``pad_s`` of its own idle head (the part before ``idle_end_s``, tiled) before
    and after it: room to shift a neighbour's weld without running off the recording."""
    head = x[: max(1, round(idle_end_s * rate))]
    pad = np.tile(head, int(np.ceil(pad_s * rate / head.size)))[: round(pad_s * rate)]
    return np.concatenate((pad, x, pad)).astype(np.float32)


def with_neighbour(
    target: np.ndarray,
    neighbour: np.ndarray,
    rate: int,
    gain_db: float,
    shift_s: float,
    target_arc_dbfs: float,
    neighbour_arc_dbfs: float,
) -> np.ndarray:
    """``target`` with ``neighbour`` mixed in, delayed by ``shift_s`` (negative: earlier) and
    scaled so that its arc is ``gain_db`` relative to the target's arc. Both should already
    be padded with idle; the neighbour is cut or padded with its own start to fit."""
    scale = 10.0 ** ((target_arc_dbfs + gain_db - neighbour_arc_dbfs) / 20.0)
    shift = round(shift_s * rate)
    placed = np.zeros(target.size, dtype=np.float64)
    src = neighbour.astype(np.float64) * scale
    lo, hi = max(0, shift), min(target.size, shift + src.size)
    placed[lo:hi] = src[lo - shift : hi - shift]
    return (target + placed).astype(np.float32)


def attenuated(x: np.ndarray, rate: int, span_s: tuple[float, float], db: float) -> np.ndarray:
    """``x`` with ``span_s`` (s) turned down by ``db`` (a quieter arc for a while: the torch
    moved away, a shield in the way), 20 ms ramps at its edges so no click marks them."""
    gain = np.ones(x.size)
    a, b = (min(x.size, max(0, round(s * rate))) for s in span_s)
    gain[a:b] = 10.0 ** (-db / 20.0)
    ramp = max(1, round(0.02 * rate))
    gain = np.convolve(gain, np.ones(ramp) / ramp, mode="same")
    return (x * gain).astype(np.float32)


def ramped_in(
    x: np.ndarray, rate: int, start_s: float, ramp_s: float, from_db: float
) -> np.ndarray:
    """``x`` with its ``ramp_s`` from ``start_s`` faded in from ``from_db`` (linear in dB):
    a soft strike, the arc establishing itself over a second."""
    gain_db = np.zeros(x.size)
    a, b = (min(x.size, max(0, round(s * rate))) for s in (start_s, start_s + ramp_s))
    gain_db[a:b] = np.linspace(from_db, 0.0, b - a, endpoint=False)
    return (x * 10.0 ** (gain_db / 20.0)).astype(np.float32)


ARC_BAND_HZ = (2000.0, 8000.0)  # where a neighbour's arc level is matched (arcs dominate it)


def arc_band_level_db(x: np.ndarray, rate: int, arc_s: tuple[float, float]) -> float:
    """An arc's level as an RMS meter with 1 s integration reads it most of the time: the
    median over the arc's whole seconds of the mean-square 2-8 kHz level (dBFS). Power within
    each second (the arc's flicker counts, as in any level reading), the median across them
    (a rare bang, like one recording's clipped pop, does not set the level)."""
    frame = round(0.05 * rate)
    a, b = (round(s * rate / frame) for s in arc_s)
    n = x.size // frame * frame
    power = 10.0 ** (frame_band_db(x[:n], frame, rate, *ARC_BAND_HZ)[max(0, a) : b] / 10.0)
    per_s = round(1.0 / 0.05)
    seconds = power[: power.size // per_s * per_s].reshape(-1, per_s).mean(axis=1)
    return float(np.median(10.0 * np.log10(seconds)))
