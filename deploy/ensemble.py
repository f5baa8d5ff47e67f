"""An ensemble of window classifiers behind one front end: the shipped model of a training
run with `ensemble: K` (K members, one per seed).

The log-mel front end has no trainable weights and every member shares its parameters, so it
runs once per window; each member then applies its own input normalisation and CNN. A
window's defect probability is the mean of the members' softmax[defect]. To keep the
classifier's contract (windows [T, S] or [T, 1, S] -> logits [T, 2], softmax[:, 1] =
p(defect)), that mean is returned as the logits [0, logit(p)], as `deploy.anomaly.FusedScorer`
does, so `DeployModule`, the ONNX twin and every consumer take it unchanged.

The probability is clipped to [PROB_EPS, 1 - PROB_EPS] before the logit (log(0) would give an
infinite logit); the round trip through the softmax changes p by at most that epsilon.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from deploy.backbone import BackboneParams, WindowClassifier
from deploy.frontend import LogMel
from deploy.frontend_params import FrontEndParams

# Clip of the mean probability before its logit: float32's largest value below 1 is
# 1 - 6e-8, so 1e-7 keeps both ends finite; far below the 1e-5 the exports are checked to.
PROB_EPS = 1e-7


class MemberHead(nn.Module):
    """One member without the front end: normalised log-mel maps [T, 1, M, F] -> logits.
    Keeps the classifier's submodule names (`input_norm`, `backbone`)."""

    def __init__(self, input_norm: nn.Module, backbone: nn.Module) -> None:
        super().__init__()
        self.input_norm = input_norm
        self.backbone = backbone

    def forward(self, maps: Tensor) -> Tensor:
        return self.backbone(self.input_norm(maps))


class EnsembleClassifier(nn.Module):
    """Raw windows [T, S] (or [T, 1, S]) -> logits [T, 2] = [0, logit(mean member p)]."""

    def __init__(
        self,
        frontend: FrontEndParams,
        backbone: BackboneParams,
        members: int,
        defect_idx: int = 1,
    ) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, got {members}")
        self.preprocess = LogMel(frontend)
        heads = []
        for _ in range(members):  # shapes only: the weights come from the members
            c = WindowClassifier(frontend, backbone)
            heads.append(MemberHead(c.input_norm, c.backbone))
        self.members = nn.ModuleList(heads)
        self.n_members = members
        self.defect_idx = defect_idx
        self.eps = PROB_EPS  # an attribute: TorchScript cannot read module globals

    @classmethod
    def from_members(
        cls,
        classifiers: Sequence[WindowClassifier],
        frontend: FrontEndParams,
        backbone: BackboneParams,
        defect_idx: int = 1,
    ) -> EnsembleClassifier:
        """The ensemble of trained classifiers (their weights are copied in)."""
        ensemble = cls(frontend, backbone, len(classifiers), defect_idx)
        with torch.no_grad():
            for head, c in zip(ensemble.members, classifiers, strict=True):
                head.load_state_dict(MemberHead(c.input_norm, c.backbone).state_dict())
        return ensemble.eval()

    def forward(self, w: Tensor) -> Tensor:
        if w.dim() == 3:
            w = w.squeeze(1)
        return self.classify_maps(self.preprocess(w))

    def member_probs(self, maps: Tensor) -> Tensor:
        """Normalised log-mel maps -> each member's defect probability [K, T]."""
        out = []
        for head in self.members:
            out.append(torch.softmax(head(maps), dim=1)[:, self.defect_idx])
        return torch.stack(out)

    def classify_maps(self, maps: Tensor) -> Tensor:
        """Normalised log-mel maps [T, 1, M, F] -> logits (training scores cached maps)."""
        p = self.member_probs(maps).mean(dim=0).clamp(self.eps, 1.0 - self.eps)
        z = torch.log(p) - torch.log1p(-p)
        zero = torch.zeros_like(z)
        if self.defect_idx == 0:
            return torch.stack([z, zero], dim=1)
        return torch.stack([zero, z], dim=1)
