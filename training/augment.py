"""Training-time augmentation of a weld's mel frames: new sessions without new recordings.

A config folder is one recording session (one microphone, room, material, day), so a model
can learn the session instead of the weld. These transforms change what a session changes
and keep what a defect changes, on the cached dB mel frames of a whole weld
(`training.features`), so no file is decoded again:

- grid shift: the windows start up to one window later (the daemon's grid starts wherever
  the segmenter put the weld start, not where the training cut started);
- EQ and microphone tilt: a random slope and a few smooth bumps across the mel bands, added
  in dB (a linear filter multiplies each band's power, to the band's resolution);
- noise: stationary white or pink noise added in the power domain at a random SNR (the
  factory floor; mel power of a sum of independent signals is the sum of their powers, up to
  the cross terms that average out over a band);
- neighbour / other-session mix: a good weld of another config folder added at -20..-6 dB
  (a neighbouring cell heard through the air; the model must not take "sounds like session X"
  as the label);
- reverb: each band's power smeared by an exponential tail (a room's late reverberation,
  RT60 0.1-0.6 s), at a random wet level;
- SpecAugment: one time and one band mask per window, after normalisation.

Gain alone is not a transform here: the front end normalises each window by its own mean and
std, so a gain changes nothing the model sees; it enters through the SNR of noise and mixes.
Every draw comes from one seeded generator, so a run is reproducible and resumable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812 - the universal alias

from deploy.frontend import normalise_windows
from deploy.windows import window_count
from training.features import Bag, FeatureStore, slice_windows

POWER_FLOOR = 1e-10  # the front end's floor before log10 (FrontEndParams.db_floor)
EQ_BUMPS = 3  # smooth EQ bumps per draw
EQ_BUMP_WIDTH_BANDS = 4.0  # std of a bump across mel bands
REVERB_RT60_S = (0.1, 0.6)  # late reverberation times drawn (s)
REVERB_WET_DB = (-15.0, -3.0)  # tail level relative to the direct sound (dB)


@dataclass(frozen=True)
class AugmentParams:
    """How strongly to augment; every transform off (0 / False) by default."""

    grid_shift: bool = False  # start each weld's window grid at a random frame of the first window
    eq_db: float = 0.0  # max |tilt| across the bands and max |bump| (dB)
    noise_p: float = 0.0  # probability of added noise per weld and epoch
    snr_db: tuple[float, float] = (5.0, 30.0)  # SNR range of the added noise (dB)
    mix_p: float = 0.0  # probability of mixing in a good weld of another config folder
    mix_db: tuple[float, float] = (-20.0, -6.0)  # its level relative to the weld (dB)
    reverb_p: float = 0.0  # probability of a reverberant tail
    time_mask: int = 0  # SpecAugment: widest time mask (frames); 0 = off
    band_mask: int = 0  # SpecAugment: widest band mask (mel bands); 0 = off

    @property
    def active(self) -> bool:
        return bool(
            self.grid_shift
            or self.eq_db
            or self.noise_p
            or self.mix_p
            or self.reverb_p
            or self.time_mask
            or self.band_mask
        )


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


class Augmenter:
    """Draws one augmented set of windows per bag per call; `pool` holds the good welds a
    mix may borrow from (never from the bag's own config folder)."""

    def __init__(
        self, params: AugmentParams, store: FeatureStore, pool: Sequence[Bag], seed: int
    ) -> None:
        self.params = params
        self.store = store
        self.pool = [b for b in pool if b.label == 0]
        self.generator = torch.Generator().manual_seed(seed)
        fb = store.filterbank  # [n_freqs, n_mels]: what each band collects of a spectrum
        freqs = torch.linspace(0.0, store.frontend.sample_rate / 2, fb.shape[0])
        self._white = fb.sum(dim=0)  # flat power spectrum through the filters
        self._pink = (fb / freqs.clamp(min=20.0).unsqueeze(1)).sum(dim=0)  # 1/f power

    def windows(self, bag: Bag) -> Tensor:
        """Normalised maps [T, 1, M, F] of `bag`'s windows for one epoch."""
        p, gen = self.params, self.generator
        frames = bag.frames
        n_bands = frames.shape[0]
        # Power-domain transforms; the dB -> power -> dB round trip only when one is drawn
        # (it is exact only to float rounding).
        power: Tensor | None = None
        level = torch.zeros(())
        for prob, transform in (
            (p.reverb_p, self._reverb),
            (p.mix_p if self._others(bag) else 0.0, self._mix),
            (p.noise_p, self._noise),
        ):
            if prob and float(torch.rand((), generator=gen)) < prob:
                if power is None:
                    power = torch.pow(10.0, frames / 10.0)
                    level = power.mean()
                power = transform(power, level, bag)
        if power is not None:
            frames = 10.0 * torch.log10(power.clamp(min=POWER_FLOOR))
        if p.eq_db:
            frames = frames + self._eq(n_bands).unsqueeze(1)
        offset = 0
        if p.grid_shift:
            offset = int(torch.randint(0, self.store.stride, (), generator=gen))
        hop = self.store.frontend.hop_length
        n = window_count(bag.weld.n_samples - offset * hop, self.store.chunk_samples)
        if n < 1:  # a weld of one window has no room to shift
            offset, n = 0, window_count(bag.weld.n_samples, self.store.chunk_samples)
        db = slice_windows(frames, self.store.stride, self.store.per_window, n, offset)
        maps = normalise_windows(db, self.store.frontend.norm_eps)
        if p.time_mask or p.band_mask:
            maps = self._spec_augment(maps)
        return maps

    def _eq(self, n_bands: int) -> Tensor:
        gen, top = self.generator, self.params.eq_db
        bands = torch.arange(n_bands, dtype=torch.float32)
        curve = _uniform(gen, -top, top) * (bands / max(1, n_bands - 1) - 0.5)
        for _ in range(EQ_BUMPS):
            centre = _uniform(gen, 0.0, n_bands - 1.0)
            curve = curve + _uniform(gen, -top, top) * torch.exp(
                -0.5 * ((bands - centre) / EQ_BUMP_WIDTH_BANDS) ** 2
            )
        return curve

    def _others(self, bag: Bag) -> list[Bag]:
        return [b for b in self.pool if b.entry.config_folder != bag.entry.config_folder]

    def _noise(self, power: Tensor, level: Tensor, bag: Bag) -> Tensor:
        gen = self.generator
        shape = self._white if float(torch.rand((), generator=gen)) < 0.5 else self._pink
        snr = _uniform(gen, *self.params.snr_db)
        return power + (shape / shape.mean() * level * 10.0 ** (-snr / 10.0)).unsqueeze(1)

    def _reverb(self, power: Tensor, level: Tensor, bag: Bag) -> Tensor:
        gen = self.generator
        hop_s = self.store.frontend.hop_length / self.store.frontend.sample_rate
        rt60 = _uniform(gen, *REVERB_RT60_S)
        wet = 10.0 ** (_uniform(gen, *REVERB_WET_DB) / 10.0)
        taps = max(1, math.ceil(rt60 / hop_s))
        # Power decays 60 dB over RT60; the tail starts one hop after the direct sound.
        k = torch.arange(1, taps + 1, dtype=torch.float32)
        kernel = torch.pow(10.0, -6.0 * k * hop_s / rt60)
        kernel = wet * kernel / kernel.sum()
        padded = F.pad(power.unsqueeze(1), (taps, 0))  # causal: only the past reverberates
        tail = F.conv1d(padded, kernel.flip(0).view(1, 1, -1))[:, 0, : power.shape[1]]
        return power + tail

    def _mix(self, power: Tensor, level: Tensor, bag: Bag) -> Tensor:
        gen = self.generator
        others = self._others(bag)
        other = others[int(torch.randint(0, len(others), (), generator=gen))]
        o = torch.pow(10.0, other.frames / 10.0)
        if o.shape[1] < power.shape[1]:  # a shorter weld is looped to cover this one
            o = o.repeat(1, math.ceil(power.shape[1] / o.shape[1]))
        start = int(torch.randint(0, o.shape[1] - power.shape[1] + 1, (), generator=gen))
        o = o[:, start : start + power.shape[1]]
        gain = 10.0 ** (_uniform(gen, *self.params.mix_db) / 10.0)
        return power + o * (gain * level / o.mean().clamp(min=POWER_FLOOR))

    def _spec_augment(self, maps: Tensor) -> Tensor:
        gen, p = self.generator, self.params
        out = maps.clone()
        n_bands, n_frames = maps.shape[2], maps.shape[3]
        for i in range(maps.shape[0]):
            if p.time_mask:
                width = int(torch.randint(0, p.time_mask + 1, (), generator=gen))
                at = int(torch.randint(0, max(1, n_frames - width + 1), (), generator=gen))
                out[i, :, :, at : at + width] = 0.0  # 0 = the window's mean after normalising
            if p.band_mask:
                width = int(torch.randint(0, p.band_mask + 1, (), generator=gen))
                at = int(torch.randint(0, max(1, n_bands - width + 1), (), generator=gen))
                out[i, :, at : at + width, :] = 0.0
        return out
