"""The window classifier: log-mel front end + a small ResNet-style CNN (~186k parameters).

Module names and `nn.Sequential` indices match the original pipeline's `base_model`, so a
state dict moves between its artifacts and ours unchanged (at the default width and input
normalisation). Two knobs make it smaller or more session-robust:

- ``width``: channels of the first stage (32 in the original; the later stages double it);
- ``input_norm``: ``window`` is the front end's own per-window mean/std normalisation;
  ``band`` also takes each mel band's mean over the window's frames away (and rescales to
  unit std), so a static colouring of the spectrum (microphone, distance, room, material)
  no longer reaches the CNN: what is left is how the sound changes within the window;
- ``kind``: ``cnn`` (the original) or ``stats``, a much smaller scorer: each band's spread
  over the window's frames and its mean frame-to-frame change (how much and how fast the
  arc's sound fluctuates), then a one-hidden-layer perceptron of ``width`` units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from deploy.frontend import LogMel
from deploy.frontend_params import FrontEndParams

INPUT_NORMS = ("window", "band")  # see the module docstring
KINDS = ("cnn", "stats")
BAND_NORM_EPS = 1e-6  # added to the std after band centring (a constant window stays finite)


@dataclass(frozen=True)
class BackboneParams:
    n_classes: int = 2  # output logits (binary: good_weld / defect)
    dropout: float = 0.15  # before the final linear layer
    width: int = 32  # channels of the first stage; 64 and 128 at the original's default
    input_norm: str = "window"  # "window" (the original) or "band" (also centre each band)
    kind: str = "cnn"  # "cnn" (the original) or "stats" (band statistics + perceptron)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    @property
    def embedding_size(self) -> int:
        """Features before the final linear layer (the last stage's channels)."""
        return self.width if self.kind == "stats" else 4 * self.width


class BandCentre(nn.Module):
    """[T, 1, M, F] maps -> each band minus its mean over the frames, rescaled to unit std."""

    def __init__(self) -> None:
        super().__init__()
        self.eps = BAND_NORM_EPS  # an attribute: TorchScript cannot read module globals

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(dim=-1, keepdim=True)
        return centred / (centred.std(dim=(-2, -1), keepdim=True) + self.eps)


class BandStatistics(nn.Module):
    """[T, 1, M, F] maps -> [T, 2M]: each band's std over the frames, then its mean absolute
    change from one frame to the next."""

    def __init__(self) -> None:
        super().__init__()
        self.eps = BAND_NORM_EPS

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1, 2) if x.dim() == 4 else x  # [T, M, F]
        centred = x - x.mean(dim=-1, keepdim=True)
        spread = torch.sqrt((centred * centred).mean(dim=-1) + self.eps)
        change = (x[..., 1:] - x[..., :-1]).abs().mean(dim=-1)
        return torch.cat([spread, change], dim=1)


def build_stats_backbone(params: BackboneParams, n_mels: int) -> nn.Sequential:
    """Band statistics, BatchNorm, a hidden layer of `width` units, dropout, linear."""
    return nn.Sequential(
        BandStatistics(),
        nn.BatchNorm1d(2 * n_mels),
        nn.Linear(2 * n_mels, params.width),
        nn.ReLU(),
        nn.Dropout(params.dropout),
        nn.Linear(params.width, params.n_classes),
    )


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class ResidualBlock(nn.Module):
    """Two 3x3 conv+BN with an identity shortcut (channel count unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(channels)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.relu(self.b1(self.c1(x)))
        return nn.functional.relu(self.b2(self.c2(y)) + x)


def build_backbone(params: BackboneParams | None = None) -> nn.Sequential:
    """stem 1->32, res32, pool, 32->64, res64, pool, 64->128, pool, GAP, dropout, linear."""
    p = params or BackboneParams()
    c1, c2, c3 = p.width, 2 * p.width, 4 * p.width
    return nn.Sequential(
        *_conv_bn_relu(1, c1),  # 0-2
        ResidualBlock(c1),  # 3
        nn.MaxPool2d(2),  # 4
        *_conv_bn_relu(c1, c2),  # 5-7
        ResidualBlock(c2),  # 8
        nn.MaxPool2d(2),  # 9
        *_conv_bn_relu(c2, c3),  # 10-12
        nn.MaxPool2d(2),  # 13
        nn.AdaptiveAvgPool2d(1),  # 14
        nn.Flatten(),  # 15
        nn.Dropout(p.dropout),  # 16
        nn.Linear(c3, p.n_classes),  # 17
    )


class WindowClassifier(nn.Module):
    """Raw windows [T, S] (or [T, 1, S]) -> class logits [T, n_classes]."""

    def __init__(
        self, frontend: FrontEndParams | None = None, backbone: BackboneParams | None = None
    ) -> None:
        super().__init__()
        params = backbone or BackboneParams()
        self.preprocess = LogMel(frontend)
        # No weights, so the state dict keeps the original's keys either way.
        self.input_norm = BandCentre() if params.input_norm == "band" else nn.Identity()
        n_mels = (frontend or FrontEndParams()).n_mels
        if params.kind == "stats":
            self.backbone = build_stats_backbone(params, n_mels)
        else:
            self.backbone = build_backbone(params)

    def forward(self, w: Tensor) -> Tensor:
        if w.dim() == 3:
            w = w.squeeze(1)
        return self.backbone(self.input_norm(self.preprocess(w)))

    def classify_maps(self, maps: Tensor) -> Tensor:
        """Normalised log-mel maps [T, 1, M, F] (the front end's output) -> logits: what
        training runs on cached features."""
        return self.backbone(self.input_norm(maps))
