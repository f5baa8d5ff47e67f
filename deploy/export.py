"""Export a trained window classifier as `deploy_single_label.pt` (+ `.sha256` beside it)."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from deploy import torchscript
from deploy.artifact import ARTIFACT_FORMAT_VERSION, LABEL_NAMES, META_EXTRA_FILE, DeployModule
from deploy.frontend import FrontEndParams

DEFAULT_ARTIFACT_NAME = "deploy_single_label.pt"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sha256: str
    chunk_samples: int
    defect_idx: int
    eval_pool_ratio: float
    threshold: float

    def summary_line(self) -> str:
        """The original exporter's second output line."""
        return (
            f"chunk_samples={self.chunk_samples} | defect_idx={self.defect_idx} | "
            f"eval_pool_ratio={self.eval_pool_ratio} | threshold={self.threshold}"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sha256_file(path: Path, sha256: str) -> Path:
    """`sha256sum`-compatible `<path>.sha256`, so `sha256sum -c` verifies a delivered artifact."""
    out = path.with_name(path.name + ".sha256")
    out.write_text(f"{sha256}  {path.name}\n")
    return out


def export_artifact(
    classifier: nn.Module,
    output: Path,
    *,
    frontend: FrontEndParams,
    threshold: float,
    eval_pool_ratio: float,
    defect_idx: int = 1,
    chunk_seconds: float = 1.0,
    model_params: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> ExportResult:
    """Script `classifier` into a deploy artifact at `output`; returns its sha256.

    `classifier` is any window scorer with the classifier's contract (windows [T, S] or
    [T, 1, S] -> logits [T, classes]): a `deploy.backbone.WindowClassifier`, or an enrolled
    `deploy.anomaly.AnomalyScorer` / `FusedScorer`.

    `defect_idx` is the classifier's output index of the defect class; `provenance` (training
    run, config, metrics, data) is stored verbatim in the metadata.
    """
    if not 0.0 < eval_pool_ratio <= 1.0:
        raise ValueError(f"eval_pool_ratio must be in (0, 1], got {eval_pool_ratio}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    chunk_samples = round(chunk_seconds * frontend.sample_rate)
    meta = {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "sample_rate": frontend.sample_rate,
        "chunk_samples": chunk_samples,
        "label_names": LABEL_NAMES,
        "defect_idx": defect_idx,
        "eval_pool_ratio": eval_pool_ratio,
        "threshold": threshold,
        "frontend": frontend.as_dict(),
        "model": model_params or {},
        "provenance": provenance or {},
    }
    meta_json = json.dumps(meta, sort_keys=True)
    base = copy.deepcopy(classifier).cpu().eval()
    # Inference-only artifact: outputs carry no autograd graph for callers to trip over.
    base.requires_grad_(False)
    module = DeployModule(
        base,
        chunk_samples=chunk_samples,
        defect_idx=defect_idx,
        eval_pool_ratio=float(eval_pool_ratio),
        threshold=float(threshold),
        sample_rate=frontend.sample_rate,
        metadata_json=meta_json,
    ).eval()
    scripted = torchscript.script(module)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    torchscript.save(scripted, str(tmp), {META_EXTRA_FILE: meta_json})
    tmp.replace(output)  # atomic: a reader never sees a half-written artifact
    sha = file_sha256(output)
    write_sha256_file(output, sha)
    return ExportResult(output, sha, chunk_samples, defect_idx, eval_pool_ratio, threshold)
