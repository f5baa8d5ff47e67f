"""Top-k multiple-instance pooling: the one implementation used by training, the artifact,
evaluation, replay and the daemon's rolling verdict."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def topk_count(n_windows: int, ratio: float) -> int:
    """k = ceil(ratio * n), at least 1 and at most n (the original's rule)."""
    return min(max(1, math.ceil(ratio * float(n_windows))), n_windows)


def topk_pool(probs: Tensor, ratio: float) -> Tensor:
    """Mean of the top-k window probabilities of one bag (`probs` is 1-D, non-empty).

    Differentiable (training back-propagates through the selected windows) and scriptable.
    """
    k = topk_count(probs.numel(), ratio)
    return torch.topk(probs, k).values.mean()
