"""Channel mixing and window cutting: the one place that decides which samples form a window.

One implementation for every caller: the TorchScript artifact's own `forward` (scripted),
training's features, predict, scan, evaluate, replay and the daemon, whichever the backend.
The functions use only what numpy arrays, torch tensors and TorchScript share (`ndim`,
`shape`, `mean(0)`, slicing, `reshape`), so they take and return either kind. The array
arguments are left unannotated on purpose: TorchScript reads an unannotated argument as a
Tensor, and an annotation would make this module import torch, which the base install (ONNX
Runtime only) does not have.
"""

from __future__ import annotations


def window_count(n_samples: int, chunk_samples: int) -> int:
    """Whole windows that fit, aligned at sample 0 (a partial tail window is dropped)."""
    return n_samples // chunk_samples


def mix_channels(waveform):
    """[C, N] -> [N]: the channel mean (the original artifact's rule for multichannel input)."""
    if waveform.ndim != 2:
        raise ValueError("waveform must have shape (channels, samples)")
    return waveform.mean(0) if waveform.shape[0] > 1 else waveform[0]


def cut_windows(mono, chunk_samples: int):
    """[N] -> [T, chunk_samples]: non-overlapping whole windows from the first sample (a view
    where the input allows one)."""
    n = window_count(mono.shape[0], chunk_samples)
    return mono[: n * chunk_samples].reshape(n, chunk_samples)
