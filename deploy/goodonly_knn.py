"""Good-only scoring by k nearest neighbours: how far a window's sound lies from the nearest
windows of a cell's good welds, in units of how far those good windows lie from each other.

The reference is a bank of good windows' embeddings (`deploy.anomaly.spectral_embedding`,
standardised per dimension by the bank's own mean and spread). A window's distance is the
Euclidean distance to its `k`-th nearest bank window, divided by the bank's own
normaliser: the median, over the bank's windows, of each one's `k`-th nearest distance to
the windows of the *other* welds of the bank (leave-one-weld-out: windows of one weld sit
close together, so counting a weld's own neighbours would make every new weld look far).
A distance of 1 is then "as far as a good weld of this cell is from the other good welds",
whatever the cell's spread: that is the per-reference normalisation the strongest
anomalous-sound detectors use (Mahalanobis, `deploy.anomaly.CellReference`, assumes one
elliptical cloud; a cell with two process settings is two clouds, and k-NN follows both).

`KnnReference` has the `CellReference` interface (embeddings [T, D] -> calibrated logits
[T]: (distance - centre) / scale, calibrated at enrollment, `training.enroll.calibrate`),
so `AnomalyScorer` and `FusedScorer` take either, and every consumer (predict, scan,
evaluate, replay, the daemon, the ONNX twin) runs it unchanged. `fit_knn` builds it; the
training side calls the module's own `distance` for its calibration, so the score that
is calibrated is the score the artifact computes. Plain tensor maths (matmul, topk, sqrt):
scriptable and exportable to ONNX.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

DEFAULT_K = 3  # k-th neighbour: one odd reference window (a spatter burst) alone never vouches
NORM_QUANTILE = 0.5  # the normaliser: the median leave-one-weld-out k-NN distance of the bank
MAX_BANK_WINDOWS = 4096  # bank cap (evenly thinned above it): 4096 x 120 float32 = 2 MiB
STD_FLOOR = 1e-6  # per-dimension spread floor before standardising (a constant band)
NORM_FLOOR = 1e-6  # a bank of identical windows must not divide by zero


class KnnReference(nn.Module):
    """Window embeddings [T, D] -> calibrated anomaly logits [T]: (distance - centre) / scale,
    with distance = k-th nearest bank distance / norm."""

    if TYPE_CHECKING:
        # The buffers registered below, for the type checker only (see deploy/frontend.py).
        mean: Tensor
        inv_std: Tensor
        bank: Tensor
        bank_sq: Tensor

    def __init__(
        self,
        mean: Tensor,
        inv_std: Tensor,
        bank: Tensor,
        k: int,
        norm: float,
        centre: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        d = mean.numel()
        if mean.dim() != 1 or inv_std.shape != (d,) or bank.dim() != 2 or bank.shape[1] != d:
            raise ValueError(
                f"mean [D], inv_std [D] and bank [N, D] expected, got {tuple(mean.shape)}, "
                f"{tuple(inv_std.shape)}, {tuple(bank.shape)}"
            )
        if not 1 <= k <= bank.shape[0]:
            raise ValueError(f"k must be in [1, {bank.shape[0]}] (the bank's windows), got {k}")
        if not (norm > 0.0 and scale > 0.0):
            raise ValueError(f"norm and scale must be positive, got {norm}, {scale}")
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("inv_std", inv_std.float().clone())
        self.register_buffer("bank", bank.float().clone())
        # |b|^2 of each bank row, once: the distance expands |x - b|^2 = |x|^2 - 2 x.b + |b|^2
        self.register_buffer("bank_sq", (bank.float() ** 2).sum(dim=1))
        self.k = int(k)
        self.norm = float(norm)
        self.centre = float(centre)
        self.scale = float(scale)

    def distance(self, emb: Tensor) -> Tensor:
        """Normalised k-th nearest bank distance of each row of [T, D]."""
        z = (emb - self.mean) * self.inv_std
        sq = (z * z).sum(dim=1, keepdim=True) - 2.0 * torch.matmul(z, self.bank.t())
        sq = torch.clamp(sq + self.bank_sq.unsqueeze(0), min=0.0)
        kth = torch.topk(sq, self.k, dim=1, largest=False).values[:, self.k - 1]
        return torch.sqrt(kth) / self.norm

    def forward(self, emb: Tensor) -> Tensor:
        return (self.distance(emb) - self.centre) / self.scale


def _thin(x: np.ndarray, owner: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `cap` rows, evenly spaced (every weld keeps its share)."""
    if len(x) <= cap:
        return x, owner
    keep = np.linspace(0, len(x) - 1, cap).round().astype(int)
    return x[keep], owner[keep]


def _kth_other_weld(z: np.ndarray, owner: np.ndarray, k: int) -> np.ndarray:
    """Each row's k-th nearest distance to the rows of other welds (of other rows when the
    bank holds one weld)."""
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] - 2.0 * z @ z.T + sq[None, :], 0.0)
    if len(np.unique(owner)) >= 2:
        d2[owner[:, None] == owner[None, :]] = np.inf
    else:
        np.fill_diagonal(d2, np.inf)
    reachable = np.isfinite(d2).sum(axis=1)
    kk = np.minimum(k, np.maximum(reachable, 1)) - 1
    part = np.sort(d2, axis=1)
    return np.asarray(np.sqrt(part[np.arange(len(z)), kk]))


def fit_knn(
    welds: Sequence[np.ndarray],
    k: int = DEFAULT_K,
    centre: float = 0.0,
    scale: float = 1.0,
    max_windows: int = MAX_BANK_WINDOWS,
) -> KnnReference:
    """The reference of good welds' window embeddings (one [n_i, D] array per weld); the
    bank is thinned evenly to `max_windows`. ValueError when there is no window."""
    welds = [np.asarray(w, dtype=np.float64) for w in welds if len(w) > 0]
    if not welds:
        raise ValueError("no window to make a k-NN reference from")
    x = np.concatenate(welds)
    owner = np.concatenate([np.full(len(w), i) for i, w in enumerate(welds)])
    x, owner = _thin(x, owner, max_windows)
    mean = x.mean(axis=0)
    inv_std = 1.0 / np.maximum(x.std(axis=0), STD_FLOOR)
    z = (x - mean) * inv_std
    k = max(1, min(k, len(z) - 1 if len(z) > 1 else 1))
    norm = float(np.quantile(_kth_other_weld(z, owner, k), NORM_QUANTILE))
    return KnnReference(
        torch.from_numpy(mean),
        torch.from_numpy(inv_std),
        torch.from_numpy(z),
        k,
        max(norm, NORM_FLOOR),
        centre,
        scale,
    )
