"""Log-mel front end in plain torch (no torchaudio), scriptable into the deploy artifact.

The parameters reproduce the original pipeline exactly (see ORIGINAL_PIPELINE.md): 16 kHz,
n_fft 1024, a 640-sample periodic Hann window centred in the 1024-point frame (what torch.stft
does when win_length < n_fft), hop 320, no centring, power spectrum, 40 HTK mel bands on
0-8000 Hz without filter normalisation, 10*log10 with a 1e-10 floor, then each window
normalised by its own mean and unbiased std (+1e-6).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class FrontEndParams:
    """Front-end settings; the artifact stores them so a mismatch can be named at load time."""

    sample_rate: int = 16000  # Hz, the model's input rate
    n_fft: int = 1024  # FFT size in samples (513 frequency bins)
    win_length: int = 640  # analysis window in samples (0.04 s at 16 kHz)
    hop_length: int = 320  # frame hop in samples (0.02 s at 16 kHz)
    n_mels: int = 40  # mel bands
    f_min: float = 0.0  # Hz, lowest mel edge
    f_max: float = 8000.0  # Hz, highest mel edge (Nyquist at 16 kHz)
    db_floor: float = 1e-10  # power floor before log10, so silence gives -100 dB, not -inf
    norm_eps: float = 1e-6  # added to the std so a constant window does not divide by zero

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a window of `n_samples` (no centring, no padding).

        1 + (16000 - 1024) // 320 = 47 for a 1 s window: torch.stft frames by n_fft, not by
        win_length. The original's notes say 40 x 49, but its artifacts compute 40 x 47; the
        artifacts are the contract.
        """
        return 1 + (n_samples - self.n_fft) // self.hop_length


def hz_to_mel_htk(freq_hz: float) -> float:
    return 2595.0 * math.log10(1.0 + freq_hz / 700.0)


def htk_mel_filterbank(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int
) -> Tensor:
    """Triangular HTK-scale mel filters without area normalisation, shape [n_freqs, n_mels].

    Computed the way torchaudio's `melscale_fbanks(norm=None, mel_scale="htk")` does (float32
    linspace of mel points, slopes against the bin frequencies), so artifacts exported by the
    original pipeline and by this project share bit-identical filters.
    """
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(hz_to_mel_htk(f_min), hz_to_mel_htk(f_max), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


class LogMel(nn.Module):
    """Windows [T, S] -> per-window normalised log-mel maps [T, 1, n_mels, frames]."""

    def __init__(self, params: FrontEndParams | None = None) -> None:
        super().__init__()
        p = params or FrontEndParams()
        self.n_fft = p.n_fft
        self.hop_length = p.hop_length
        self.win_length = p.win_length
        self.db_floor = p.db_floor
        self.norm_eps = p.norm_eps
        self.register_buffer("win", torch.hann_window(p.win_length, periodic=True))
        fb = htk_mel_filterbank(p.n_fft // 2 + 1, p.f_min, p.f_max, p.n_mels, p.sample_rate)
        self.register_buffer("fb", fb)

    def forward(self, x: Tensor) -> Tensor:
        return normalise_windows(self.power_db(x), self.norm_eps)

    def power_db(self, x: Tensor) -> Tensor:
        """Signals [T, S] -> mel power in dB [T, n_mels, frames], before normalisation
        (training caches this for a whole weld and slices its windows from it)."""
        spec = torch.stft(
            x,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.win,
            center=False,
            normalized=False,
            return_complex=True,
        )
        power = spec.abs().pow(2)
        mel = torch.matmul(power.transpose(-1, -2), self.fb).transpose(-1, -2)
        return 10.0 * torch.log10(torch.clamp(mel, min=self.db_floor))


def normalise_windows(db: Tensor, eps: float) -> Tensor:
    """dB maps [T, n_mels, frames] -> each window by its own mean and unbiased std (+eps),
    as [T, 1, n_mels, frames] (the model's input)."""
    mean = db.mean(dim=(1, 2), keepdim=True)
    std = db.std(dim=(1, 2), keepdim=True)
    return ((db - mean) / (std + eps)).unsqueeze(1)
