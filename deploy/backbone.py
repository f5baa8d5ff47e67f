"""The window classifier: log-mel front end + a small ResNet-style CNN (~186k parameters).

Module names and `nn.Sequential` indices match the original pipeline's `base_model`, so a
state dict moves between its artifacts and ours unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

from deploy.frontend import FrontEndParams, LogMel


@dataclass(frozen=True)
class BackboneParams:
    n_classes: int = 2  # output logits (binary: good_weld / defect)
    dropout: float = 0.15  # before the final linear layer

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


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
    return nn.Sequential(
        *_conv_bn_relu(1, 32),  # 0-2
        ResidualBlock(32),  # 3
        nn.MaxPool2d(2),  # 4
        *_conv_bn_relu(32, 64),  # 5-7
        ResidualBlock(64),  # 8
        nn.MaxPool2d(2),  # 9
        *_conv_bn_relu(64, 128),  # 10-12
        nn.MaxPool2d(2),  # 13
        nn.AdaptiveAvgPool2d(1),  # 14
        nn.Flatten(),  # 15
        nn.Dropout(p.dropout),  # 16
        nn.Linear(128, p.n_classes),  # 17
    )


class WindowClassifier(nn.Module):
    """Raw windows [T, S] (or [T, 1, S]) -> class logits [T, n_classes]."""

    def __init__(
        self, frontend: FrontEndParams | None = None, backbone: BackboneParams | None = None
    ) -> None:
        super().__init__()
        self.preprocess = LogMel(frontend)
        self.backbone = build_backbone(backbone)

    def forward(self, w: Tensor) -> Tensor:
        if w.dim() == 3:
            w = w.squeeze(1)
        return self.backbone(self.preprocess(w))
