"""The TorchScript backend: a `.pt` deploy artifact (this project's or the original
pipeline's) run by torch.

Loading never unpickles arbitrary Python objects: the file must be a TorchScript archive
(`torch.jit.load` only rebuilds TorchScript types and tensors); a `torch.save` checkpoint or
any other file is refused before torch reads it.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy import torchscript
from deploy.artifact import defect_probability
from deploy.contract import META_EXTRA_FILE, ModelContract, check_format_version
from deploy.errors import ArtifactError, AudioError
from deploy.model import DeployModel

REQUIRED_ATTRIBUTES = (*ModelContract.names(), "base_model")


def check_archive(path: Path, data: bytes | None = None) -> None:
    """Refuse anything but a TorchScript archive before torch reads a byte of it (`data`:
    the file's bytes, already read)."""
    if data is None and not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    source: Path | io.BytesIO = io.BytesIO(data) if data is not None else path
    if not zipfile.is_zipfile(source):
        raise ArtifactError(
            f"{path}: not a TorchScript deploy artifact "
            "(not a zip archive: wrong or truncated file)"
        )
    try:
        with zipfile.ZipFile(source) as zf:
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


def _validate(path: Path, module: torch.jit.ScriptModule, meta: dict[str, Any]) -> None:
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(module, a)]
    if missing:
        raise ArtifactError(f"{path}: not a deploy artifact, missing attribute(s) {missing}")
    attributes = {name: getattr(module, name) for name in ModelContract.names()}
    contract = ModelContract.read(str(path), attributes, "missing attribute(s)")
    if not meta:
        return
    check_format_version(str(path), meta)
    mismatched = contract.mismatched(meta)
    if mismatched:
        name = mismatched[0]
        raise ArtifactError(
            f"{path}: metadata field {name}={meta[name]!r} does not match the module's "
            f"{attributes[name]!r}"
        )


def read_torchscript(
    path: Path, data: bytes | None = None
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The checked scripted module and its metadata ({} for the original's artifacts); with
    `data`, loaded from exactly those bytes (the ones that were hashed)."""
    check_archive(path, data)
    extra = {META_EXTRA_FILE: ""}
    try:
        module = torchscript.load(io.BytesIO(data) if data is not None else str(path), extra)
    except (RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: cannot load as TorchScript ({first})") from exc
    module.eval()
    try:
        meta = json.loads(extra[META_EXTRA_FILE]) if extra[META_EXTRA_FILE] else {}
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: metadata {META_EXTRA_FILE} is not valid JSON") from exc
    _validate(path, module, meta)
    return module, meta


class TorchScriptModel(DeployModel):
    """A `.pt` artifact; `module` is the scripted deploy module (its `base_model` included)."""

    backend = "torchscript"

    def __init__(
        self,
        path: Path,
        module: torch.jit.ScriptModule,
        sha256: str,
        meta: dict[str, Any],
        threads: int | None = None,
    ) -> None:
        super().__init__(
            path,
            sha256,
            meta,
            chunk_samples=int(module.chunk_samples),
            defect_idx=int(module.defect_idx),
            eval_pool_ratio=float(module.eval_pool_ratio),
            threshold=float(module.threshold),
            legacy=not meta,
        )
        self.module = module
        self.threads = threads
        self._has_window_probs = hasattr(module, "window_probs")

    def _window_probs(self, windows: np.ndarray) -> np.ndarray:
        # torch's intra-op pool size is the calling thread's; set it where the model runs.
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        x = torch.from_numpy(windows)
        with torch.inference_mode():
            if self._has_window_probs:
                probs: np.ndarray = self.module.window_probs(x).numpy()
                return probs
            # The original's artifacts have no batch method: the same maths through base_model.
            logits = self.module.base_model(x.unsqueeze(1))
            return defect_probability(logits, self.defect_idx).numpy()

    def forward(self, waveform: np.ndarray) -> tuple[int, float]:
        """The artifact's own scripted `forward` (reference for equivalence checks)."""
        try:
            with torch.inference_mode():
                out = self.module(torch.as_tensor(np.asarray(waveform, dtype=np.float32)))
        except torch.jit.Error as exc:
            raise AudioError(str(exc).strip().splitlines()[-1]) from exc
        return int(out["label"]), float(out["p_defect"])


def load_torchscript(
    path: Path, sha256: str, threads: int | None = None, *, data: bytes | None = None
) -> TorchScriptModel:
    """Load and check a `.pt` artifact whose sha256 the caller has computed (and pinned);
    with `data`, from exactly those bytes."""
    module, meta = read_torchscript(path, data)
    return TorchScriptModel(path, module, sha256, meta, threads)
