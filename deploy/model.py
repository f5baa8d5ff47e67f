"""A loaded deploy artifact, whichever its format: contract facts, batched window
probabilities, pooling and thresholding. No torch here.

The backends (`deploy.torchscript_model` for `.pt`, `deploy.onnx_model` for `.onnx`) supply
one thing: defect probabilities for a batch of windows. Everything that turns a recording
into a verdict (channel mix, window cut, top-k pool, threshold) is shared and lives in
`deploy.windows` and `deploy.pooling`, so both formats judge a recording the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploy.contract import LABEL_NAMES, LEGACY_SAMPLE_RATE, model_identity
from deploy.errors import ArtifactError, AudioError
from deploy.pooling import topk_pool_np
from deploy.windows import cut_windows, mix_channels

DEFAULT_BATCH_WINDOWS = 64  # windows per forward pass: amortises call overhead, bounds memory


@dataclass(frozen=True)
class Verdict:
    """One bag's decision: label 0 good_weld / 1 defect, pooled p_defect, and its windows."""

    label: int
    p_defect: float
    threshold: float
    window_probs: np.ndarray  # float32 [n_windows]

    @property
    def label_name(self) -> str:
        return LABEL_NAMES[self.label]

    @property
    def n_windows(self) -> int:
        return int(self.window_probs.size)


def decide(p_defect: float, threshold: float) -> int:
    """label = p >= threshold, compared in float32 as the artifact's own `forward` does."""
    return int(np.float32(p_defect) >= np.float32(threshold))


class DeployModel:
    """Contract facts and inference of one artifact. Not thread-safe: the monitor calls it
    from its one inference thread; evaluate gives each worker its own."""

    backend = "none"  # "torchscript" or "onnx" in the subclasses

    def __init__(
        self,
        path: Path,
        sha256: str,
        meta: dict[str, Any],
        *,
        chunk_samples: int,
        defect_idx: int,
        eval_pool_ratio: float,
        threshold: float,
        legacy: bool,
    ) -> None:
        self.path = path  # the file the user named (and pinned)
        self.sha256 = sha256
        # The file that runs: `path` itself, or the ONNX twin the loader chose beside a `.pt`.
        self.runtime_path = path
        self.runtime_sha256 = sha256
        self.metadata: dict[str, Any] = meta
        self.legacy = legacy
        self.chunk_samples = chunk_samples
        self.defect_idx = defect_idx
        self.eval_pool_ratio = eval_pool_ratio
        self.threshold = threshold
        self.sample_rate = int(meta.get("sample_rate", LEGACY_SAMPLE_RATE))
        self.format_version = int(meta.get("format_version", 0))
        self.label_names = list(meta.get("label_names", LABEL_NAMES))
        self.model_name, self.model_version = model_identity(meta)

    def describe(self) -> dict[str, Any]:
        """The facts a person needs to recognise this artifact (for logs and reports)."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "name": self.model_name,
            "version": self.model_version,
            "backend": self.backend,
            "runtime_path": str(self.runtime_path),
            "runtime_sha256": self.runtime_sha256,
            "format_version": self.format_version,
            "legacy": self.legacy,
            "sample_rate": self.sample_rate,
            "chunk_samples": self.chunk_samples,
            "defect_idx": self.defect_idx,
            "eval_pool_ratio": self.eval_pool_ratio,
            "threshold": self.threshold,
        }

    def window_probs(
        self, windows: np.ndarray, batch_size: int = DEFAULT_BATCH_WINDOWS
    ) -> np.ndarray:
        """[T, chunk_samples] raw windows -> float32 [T] defect probabilities, in batches."""
        x = np.ascontiguousarray(np.asarray(windows, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.chunk_samples:
            raise AudioError(
                f"windows must have shape (n, {self.chunk_samples}), got {tuple(x.shape)}"
            )
        out = [self._checked(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        if not out:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        probs = np.asarray(self._window_probs(batch))
        if probs.shape != (len(batch),):
            raise ArtifactError(
                f"{self.path}: returned shape {tuple(probs.shape)} for {len(batch)} windows, "
                f"expected ({len(batch)},): not a deploy artifact's output"
            )
        return probs

    def _window_probs(self, windows: np.ndarray) -> np.ndarray:
        """One batch [t, chunk_samples] float32 -> [t] float32 (the backend's one job)."""
        raise NotImplementedError

    def judge(self, window_probs: Sequence[float] | np.ndarray) -> Verdict:
        """Pool window probabilities of one bag (top-k, eval_pool_ratio) and threshold them."""
        probs = np.asarray(window_probs, dtype=np.float32)
        if probs.size == 0:
            raise AudioError("no whole window to judge")
        bad = np.flatnonzero(~np.isfinite(probs) | (probs < 0) | (probs > 1))
        if bad.size:
            raise ArtifactError(
                f"{self.path}: gave invalid probabilities for window(s) "
                f"{bad[:5].tolist()} ({probs[bad[:5]].tolist()}): no verdict"
            )
        p = topk_pool_np(probs, self.eval_pool_ratio)
        return Verdict(decide(p, self.threshold), p, self.threshold, probs)

    def bag_windows(self, mono: np.ndarray) -> np.ndarray:
        """One bag's [N] mono audio -> its [T, chunk_samples] whole windows, aligned at its
        first sample; raises AudioError when not one whole window fits."""
        windows: np.ndarray = cut_windows(mono, self.chunk_samples)
        if windows.shape[0] < 1:
            raise AudioError(
                f"audio shorter than one window ({mono.shape[0]} < {self.chunk_samples} samples)"
            )
        return windows

    def judge_bags(self, bags: Sequence[np.ndarray]) -> list[Verdict]:
        """Verdicts of several bags ([T_i, chunk_samples] windows each, e.g. a recording and
        its welds) from one batched pass over all their windows: fewer, fuller runtime calls
        than one pass per bag; each bag is pooled and thresholded on its own windows."""
        if not bags:
            return []
        probs = self.window_probs(np.concatenate(bags) if len(bags) > 1 else bags[0])
        ends = np.cumsum([len(b) for b in bags])
        return [self.judge(probs[end - len(b) : end]) for b, end in zip(bags, ends, strict=True)]

    def predict(self, waveform: np.ndarray) -> Verdict:
        """Whole recording [C, N] at `sample_rate` -> one verdict (the artifact's semantics)."""
        mono = mix_channels(np.asarray(waveform, dtype=np.float32))
        return self.judge_bags([self.bag_windows(mono)])[0]

    def forward(self, waveform: np.ndarray) -> tuple[int, float]:
        """The artifact's own verdict on a recording: (label, p_defect). A TorchScript
        artifact runs its scripted `forward` (the reference for equivalence checks); an ONNX
        artifact's graph judges windows, so its verdict is `predict`'s."""
        verdict = self.predict(waveform)
        return verdict.label, verdict.p_defect

    def self_test(self) -> None:
        """One inference on silence + noise; raises ArtifactError unless it gives finite probs."""
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((2, self.chunk_samples)) * 0.01).astype(np.float32)
        try:
            probs = self.window_probs(x)
        except Exception as exc:
            raise ArtifactError(f"{self.path}: test inference failed: {exc}") from exc
        if (
            probs.shape != (2,)
            or not np.all(np.isfinite(probs))
            or np.any((probs < 0) | (probs > 1))
        ):
            raise ArtifactError(f"{self.path}: test inference gave invalid probabilities {probs}")
