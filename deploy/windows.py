"""Channel mixing and window cutting: the one place that decides which samples form a window."""

from __future__ import annotations

from torch import Tensor


def mix_channels(waveform: Tensor) -> Tensor:
    """[C, N] -> [N]: the channel mean (the original artifact's rule for multichannel input)."""
    if waveform.dim() != 2:
        raise ValueError("waveform must have shape (channels, samples)")
    return waveform.mean(dim=0) if waveform.size(0) > 1 else waveform[0]


def window_count(n_samples: int, chunk_samples: int) -> int:
    """Whole windows that fit, aligned at sample 0 (a partial tail window is dropped)."""
    return n_samples // chunk_samples


def cut_windows(mono: Tensor, chunk_samples: int) -> Tensor:
    """[N] -> [T, chunk_samples]: non-overlapping whole windows from the first sample."""
    n = window_count(mono.numel(), chunk_samples)
    return mono[: n * chunk_samples].reshape(n, chunk_samples)
