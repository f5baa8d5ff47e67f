"""Load any deploy artifact (this project's or the original pipeline's) into one object.

Loading never unpickles arbitrary Python objects: the file must be a TorchScript archive
(`torch.jit.load` only rebuilds TorchScript types and tensors); a `torch.save` checkpoint or
any other file is refused before torch reads it. The file's sha256 is computed once and can be
pinned.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deploy import torchscript
from deploy.artifact import ARTIFACT_FORMAT_VERSION, LABEL_NAMES, META_EXTRA_FILE
from deploy.errors import ArtifactError, AudioError
from deploy.export import file_sha256
from deploy.pooling import topk_pool
from deploy.windows import cut_windows, mix_channels

LEGACY_SAMPLE_RATE = 16000  # the original pipeline stored no rate; it assumed 16 kHz
DEFAULT_BATCH_WINDOWS = 64  # windows per forward pass: amortises call overhead, bounds memory
REQUIRED_ATTRIBUTES = ("chunk_samples", "defect_idx", "eval_pool_ratio", "threshold", "base_model")


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


def _check_archive(path: Path) -> None:
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ArtifactError(
            f"{path}: not a TorchScript deploy artifact "
            "(not a zip archive: wrong or truncated file)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"{path}: corrupt archive ({exc})") from exc
    if bad is not None:
        raise ArtifactError(f"{path}: corrupt archive (CRC error in {bad})")
    if not any("/code/" in n for n in names):
        raise ArtifactError(
            f"{path}: a torch.save file (e.g. a training checkpoint), not a TorchScript deploy "
            "artifact; export it with `weldmon export`"
        )


class DeployModel:
    """A loaded deploy artifact: its contract attributes, metadata and batched inference.

    Not thread-safe: the monitor calls it from its one inference thread.
    """

    def __init__(self, path: Path, module: torch.jit.ScriptModule, sha256: str, meta: dict) -> None:
        self.path = path
        self.module = module
        self.sha256 = sha256
        self.metadata: dict[str, Any] = meta
        self.legacy = not meta
        self.chunk_samples = int(module.chunk_samples)
        self.defect_idx = int(module.defect_idx)
        self.eval_pool_ratio = float(module.eval_pool_ratio)
        self.threshold = float(module.threshold)
        self.sample_rate = int(meta.get("sample_rate", LEGACY_SAMPLE_RATE))
        self.format_version = int(meta.get("format_version", 0))
        self.label_names = list(LABEL_NAMES)
        self._has_window_probs = hasattr(module, "window_probs")

    def describe(self) -> dict[str, Any]:
        """The facts a person needs to recognise this artifact (for logs and reports)."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "format_version": self.format_version,
            "legacy": self.legacy,
            "sample_rate": self.sample_rate,
            "chunk_samples": self.chunk_samples,
            "defect_idx": self.defect_idx,
            "eval_pool_ratio": self.eval_pool_ratio,
            "threshold": self.threshold,
        }

    @torch.inference_mode()
    def window_probs(
        self, windows: np.ndarray | Tensor, batch_size: int = DEFAULT_BATCH_WINDOWS
    ) -> np.ndarray:
        """[T, chunk_samples] raw windows -> float32 [T] defect probabilities, in batches."""
        x = torch.as_tensor(windows, dtype=torch.float32)
        if x.dim() != 2 or x.size(1) != self.chunk_samples:
            raise AudioError(
                f"windows must have shape (n, {self.chunk_samples}), got {tuple(x.shape)}"
            )
        out = [self._window_probs(x[i : i + batch_size]) for i in range(0, x.size(0), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def _window_probs(self, x: Tensor) -> Tensor:
        if self._has_window_probs:
            return self.module.window_probs(x)
        # The original's artifacts have no batch method: the same maths through base_model.
        logits = self.module.base_model(x.unsqueeze(1))
        return torch.softmax(logits, dim=1)[:, self.defect_idx]

    def judge(self, window_probs: Sequence[float] | np.ndarray) -> Verdict:
        """Pool window probabilities of one bag (top-k, eval_pool_ratio) and threshold them."""
        probs = np.asarray(window_probs, dtype=np.float32)
        if probs.size == 0:
            raise AudioError("no whole window to judge")
        p = float(topk_pool(torch.from_numpy(probs), self.eval_pool_ratio))
        return Verdict(int(p >= self.threshold), p, self.threshold, probs)

    def predict(self, waveform: np.ndarray | Tensor) -> Verdict:
        """Whole recording [C, N] at `sample_rate` -> one verdict (the artifact's semantics)."""
        wave = torch.as_tensor(waveform, dtype=torch.float32)
        mono = mix_channels(wave)
        windows = cut_windows(mono, self.chunk_samples)
        if windows.size(0) < 1:
            raise AudioError(
                f"audio shorter than one window ({mono.numel()} < {self.chunk_samples} samples)"
            )
        return self.judge(self.window_probs(windows))

    @torch.inference_mode()
    def forward(self, waveform: np.ndarray | Tensor) -> tuple[int, float]:
        """The artifact's own `forward` (reference for equivalence checks)."""
        try:
            out = self.module(torch.as_tensor(waveform, dtype=torch.float32))
        except torch.jit.Error as exc:
            raise AudioError(str(exc).strip().splitlines()[-1]) from exc
        return int(out["label"]), float(out["p_defect"])

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


def _validate(path: Path, module: torch.jit.ScriptModule, meta: dict) -> None:
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(module, a)]
    if missing:
        raise ArtifactError(f"{path}: not a deploy artifact, missing attribute(s) {missing}")
    checks = {
        "chunk_samples": isinstance(module.chunk_samples, int) and module.chunk_samples > 0,
        "defect_idx": isinstance(module.defect_idx, int) and module.defect_idx >= 0,
        "eval_pool_ratio": isinstance(module.eval_pool_ratio, float)
        and 0.0 < module.eval_pool_ratio <= 1.0,
        "threshold": isinstance(module.threshold, float) and 0.0 <= module.threshold <= 1.0,
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        values = {name: getattr(module, name) for name in bad}
        raise ArtifactError(f"{path}: invalid attribute value(s) {values}")
    if not meta:
        return
    if int(meta.get("format_version", -1)) > ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format {meta.get('format_version')} is newer than this weldmon "
            f"understands ({ARTIFACT_FORMAT_VERSION}); upgrade weldmon"
        )
    for name in ("chunk_samples", "defect_idx", "eval_pool_ratio", "threshold"):
        if name in meta and meta[name] != getattr(module, name):
            raise ArtifactError(
                f"{path}: metadata field {name}={meta[name]!r} does not match the module's "
                f"{getattr(module, name)!r}"
            )


def load_artifact(path: str | Path, expected_sha256: str | None = None) -> DeployModel:
    """Load and check a deploy artifact; `expected_sha256` pins the exact file."""
    path = Path(path)
    _check_archive(path)
    sha = file_sha256(path)
    if expected_sha256 is not None and sha != expected_sha256.strip().lower():
        raise ArtifactError(f"{path}: sha256 {sha} does not match the pinned {expected_sha256}")
    extra = {META_EXTRA_FILE: ""}
    try:
        module = torchscript.load(str(path), extra)
    except (RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: cannot load as TorchScript ({first})") from exc
    module.eval()
    try:
        meta = json.loads(extra[META_EXTRA_FILE]) if extra[META_EXTRA_FILE] else {}
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: metadata {META_EXTRA_FILE} is not valid JSON") from exc
    _validate(path, module, meta)
    return DeployModel(path, module, sha, meta)
