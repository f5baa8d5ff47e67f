"""The TorchScript deploy module: the contract between training and everything that judges.

`forward(waveform[C, N]) -> {"label", "p_defect"}` keeps the original pipeline's semantics
(channels averaged, whole windows from sample 0, top-k pooled, label = p >= threshold) and
attributes (`chunk_samples`, `defect_idx`, `eval_pool_ratio`, `threshold`, `base_model`).
What streaming needs on top is exported as methods: `window_probs` for a batch of windows and
`pool` for a rolling verdict. Metadata travels as attributes and as a JSON extra file.
`WindowScorer` is the same window probability as a plain module, for the ONNX export.
"""

from __future__ import annotations

from typing import Dict, List  # noqa: UP035 - TorchScript needs typing generics in signatures

import torch
from torch import Tensor, nn

from deploy.contract import ARTIFACT_FORMAT_VERSION, LABEL_NAMES, META_EXTRA_FILE
from deploy.pooling import topk_pool
from deploy.windows import cut_windows, mix_channels

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "LABEL_NAMES",
    "META_EXTRA_FILE",
    "DeployModule",
    "WindowScorer",
    "defect_probability",
]


def defect_probability(logits: Tensor, defect_idx: int) -> Tensor:
    """Class logits [T, classes] -> the defect class's softmax probability [T]."""
    return torch.softmax(logits, dim=1)[:, defect_idx]


class WindowScorer(nn.Module):
    """Raw windows [T, chunk_samples] -> defect probabilities [T]: what the ONNX graph runs."""

    def __init__(self, base_model: nn.Module, defect_idx: int) -> None:
        super().__init__()
        self.base_model = base_model
        self.defect_idx = defect_idx

    def forward(self, windows: Tensor) -> Tensor:
        return defect_probability(self.base_model(windows), self.defect_idx)


class DeployModule(nn.Module):
    """Waveform in, verdict out; exported with `torch.jit.script`."""

    def __init__(
        self,
        base_model: nn.Module,  # windows [T, S] -> logits: a WindowClassifier or an ensemble
        *,
        chunk_samples: int,
        defect_idx: int,
        eval_pool_ratio: float,
        threshold: float,
        sample_rate: int,
        metadata_json: str,
    ) -> None:
        super().__init__()
        self.base_model = base_model
        self.chunk_samples = chunk_samples
        self.defect_idx = defect_idx
        self.eval_pool_ratio = eval_pool_ratio
        self.threshold = threshold
        self.sample_rate = sample_rate
        self.format_version = ARTIFACT_FORMAT_VERSION
        self.label_names: List[str] = list(LABEL_NAMES)  # noqa: UP006
        self.metadata_json = metadata_json

    @torch.jit.export
    def window_probs(self, windows: Tensor) -> Tensor:
        """[T, chunk_samples] raw windows -> [T] defect probabilities."""
        return defect_probability(self.base_model(windows), self.defect_idx)

    @torch.jit.export
    def pool(self, probs: Tensor) -> Tensor:
        """[T] window probabilities -> bag probability (top-k mean, eval_pool_ratio)."""
        return topk_pool(probs, self.eval_pool_ratio)

    def forward(self, waveform: Tensor) -> Dict[str, Tensor]:  # noqa: UP006
        if waveform.dim() != 2:
            raise RuntimeError("waveform must have shape (C, N)")
        windows = cut_windows(mix_channels(waveform), self.chunk_samples)
        if windows.size(0) < 1:
            raise RuntimeError("audio shorter than one chunk")
        p = self.pool(self.window_probs(windows))
        return {"label": (p >= self.threshold).to(torch.int64), "p_defect": p}
