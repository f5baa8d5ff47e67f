"""Top-k multiple-instance pooling: the one rule used by training, the artifact, evaluation,
replay and the daemon's rolling verdict.

`topk_count` is the rule. `topk_pool_np` pools at run time (every verdict, TorchScript and
ONNX artifacts alike) on numpy; `topk_pool` is the same mean of the k largest on a torch
tensor, differentiable for training and scripted into the TorchScript artifact's `forward`
(numpy has no top-k, torch no partition: one rule, two array libraries). Both average the k
largest float32 values in float32; a test holds them equal. No torch import here: the base
install judges ONNX artifacts without it (`topk_pool` only calls the tensor's own methods, and
its `probs` is unannotated because TorchScript reads that as a Tensor).
"""

from __future__ import annotations

import math

import numpy as np


def topk_count(n_windows: int, ratio: float) -> int:
    """k = ceil(ratio * n), at least 1 and at most n (the original's rule)."""
    return min(max(1, math.ceil(ratio * float(n_windows))), n_windows)


def topk_pool_np(probs: np.ndarray, ratio: float) -> float:
    """Mean of the top-k window probabilities of one bag (`probs` 1-D, non-empty), in float32
    like the artifact's own `forward`."""
    values = np.asarray(probs, dtype=np.float32)
    k = topk_count(values.size, ratio)
    top = np.partition(values, values.size - k)[values.size - k :]
    return float(top.mean(dtype=np.float32))


def topk_pool(probs, ratio: float):
    """Mean of the top-k window probabilities of one bag (`probs` is a 1-D, non-empty torch
    tensor). Differentiable (training back-propagates through the selected windows) and
    scriptable."""
    k = topk_count(probs.numel(), ratio)
    return probs.topk(k).values.mean()
