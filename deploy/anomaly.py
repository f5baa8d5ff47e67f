"""Good-only scoring: how far a window's sound lies from a cell's enrolled good welds.

A cell reference is the mean and the (shrunk) inverse covariance of the windows of a cell's
good welds in a small spectral embedding: for each mel band of the window's log-mel map (as
the front end normalises it), its mean over the window's frames (``mean``, the default), or
its mean and its spread (``mean_spread``), or those and its mean frame-to-frame change
(``mean_spread_delta``: the band's temporal modulation, how much the arc crackles). A
window's score is its Mahalanobis distance to that reference; a calibration (``centre``,
``scale``, fitted at enrollment so the artifact's threshold gives the false-alarm rate asked
for) turns it into a logit. Pooling is the artifact's usual top-k (`deploy.pooling`). The
other good-only scorer, k nearest neighbours on the same embeddings, is
`deploy.goodonly_knn.KnnReference`: it has this reference's interface, so both scorers
below take either.

Two window scorers speak the classifier's contract (windows [T, S] or [T, 1, S] -> logits
[T, 2], softmax[:, 1] = p(defect)), so either becomes a `DeployModule.base_model` and every
consumer (predict, scan, evaluate, replay, the daemon, an ONNX export) takes it unchanged:

- `AnomalyScorer`: front end + reference (a cell with no defect labels at all);
- `FusedScorer`: a trained `WindowClassifier` + one cell reference; a window's p_defect is
  the larger of the two (a defect is called when either the supervised model or the cell's
  own good sound says so).

Plain tensor maths (mean, matmul, sqrt, maximum): scriptable and exportable to ONNX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from deploy.backbone import WindowClassifier
from deploy.frontend import LogMel
from deploy.frontend_params import FrontEndParams
from deploy.goodonly_knn import KnnReference

EMBEDDINGS = ("mean", "mean_spread", "mean_spread_delta")  # see spectral_embedding
SPREAD_EPS = 1e-6  # inside the square root of a band's variance (a constant band stays finite)


def spectral_embedding(maps: Tensor, kind: str = "mean", eps: float = SPREAD_EPS) -> Tensor:
    """Normalised log-mel maps [T, 1, M, F] -> each band's mean over the frames ([T, M]: the
    spectrum's shape, what the process settings and the arc sound like), with
    ``mean_spread`` also its std over the frames ([T, 2M]: how steady the arc is), and with
    ``mean_spread_delta`` also its mean absolute change from one frame to the next ([T, 3M]:
    the band's temporal modulation, fast crackle against a slow swell)."""
    x = maps.flatten(1, 2)  # [T, M, F]
    mean = x.mean(dim=-1)
    if kind == "mean":
        return mean
    centred = x - mean.unsqueeze(-1)
    spread = torch.sqrt((centred * centred).mean(dim=-1) + eps)
    if kind == "mean_spread":
        return torch.cat([mean, spread], dim=1)
    delta = torch.abs(x[:, :, 1:] - x[:, :, :-1]).mean(dim=-1)
    return torch.cat([mean, spread, delta], dim=1)


class CellReference(nn.Module):
    """Window embeddings [T, D] -> calibrated anomaly logits [T]: (distance - centre) / scale,
    with distance = || whiten (x - mean) || (Mahalanobis under the enrolled covariance)."""

    if TYPE_CHECKING:
        # The buffers registered below, for the type checker only (see deploy/frontend.py).
        mean: Tensor
        whiten: Tensor

    def __init__(
        self, mean: Tensor, whiten: Tensor, centre: float = 0.0, scale: float = 1.0
    ) -> None:
        super().__init__()
        if mean.dim() != 1 or whiten.shape != (mean.numel(), mean.numel()):
            raise ValueError(
                f"mean [D] and whiten [D, D] expected, got {mean.shape}, {whiten.shape}"
            )
        if not scale > 0.0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("whiten", whiten.float().clone())
        self.centre = float(centre)
        self.scale = float(scale)

    def distance(self, emb: Tensor) -> Tensor:
        """Mahalanobis distance of each row of [T, D] to the reference."""
        z = torch.matmul(emb - self.mean, self.whiten.t())
        return torch.sqrt((z * z).sum(dim=1))

    def forward(self, emb: Tensor) -> Tensor:
        return (self.distance(emb) - self.centre) / self.scale


def _checked(embedding: str) -> str:
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    return embedding


def _as_windows(w: Tensor) -> Tensor:
    return w.squeeze(1) if w.dim() == 3 else w


class AnomalyScorer(nn.Module):
    """Raw windows [T, S] (or [T, 1, S]) -> logits [T, 2] = [0, anomaly logit]."""

    def __init__(
        self,
        frontend: FrontEndParams,
        reference: CellReference | KnnReference,
        embedding: str = "mean",
    ) -> None:
        super().__init__()
        self.preprocess = LogMel(frontend)
        self.reference = reference
        self.embedding = _checked(embedding)

    def forward(self, w: Tensor) -> Tensor:
        return self.classify_maps(self.preprocess(_as_windows(w)))

    def classify_maps(self, maps: Tensor) -> Tensor:
        """Normalised log-mel maps [T, 1, M, F] -> logits (training scores cached maps)."""
        z = self.reference(spectral_embedding(maps, self.embedding))
        return torch.stack([torch.zeros_like(z), z], dim=1)


class FusedScorer(nn.Module):
    """A supervised classifier and a cell reference on the same front end: logits
    [T, 2] = [0, max(supervised logit, anomaly logit)], i.e. p = max(p_supervised, p_cell)."""

    def __init__(
        self,
        classifier: WindowClassifier,
        reference: CellReference | KnnReference,
        defect_idx: int = 1,
        embedding: str = "mean",
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.reference = reference
        self.defect_idx = defect_idx
        self.embedding = _checked(embedding)

    def forward(self, w: Tensor) -> Tensor:
        return self.classify_maps(self.classifier.preprocess(_as_windows(w)))

    def classify_maps(self, maps: Tensor) -> Tensor:
        """Normalised log-mel maps [T, 1, M, F] -> logits (training scores cached maps)."""
        logits = self.classifier.classify_maps(maps)
        # Binary softmax: p(defect) = sigmoid(l_defect - l_good).
        supervised = logits[:, self.defect_idx] - logits[:, 1 - self.defect_idx]
        z = torch.maximum(supervised, self.reference(spectral_embedding(maps, self.embedding)))
        return torch.stack([torch.zeros_like(z), z], dim=1)
