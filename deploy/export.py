"""Export a trained window classifier as `deploy_single_label.pt` (+ `.sha256` beside it) and
its ONNX twin `deploy_single_label.onnx` (+ `.sha256`): the same contract in both formats."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from deploy import torchscript
from deploy.artifact import (
    ARTIFACT_FORMAT_VERSION,
    LABEL_NAMES,
    META_EXTRA_FILE,
    DeployModule,
    WindowScorer,
)
from deploy.contract import check_model_identity
from deploy.digest import file_sha256, write_sha256_file
from deploy.frontend_params import FrontEndParams
from deploy.loader import onnx_twin

__all__ = [
    "DEFAULT_ARTIFACT_NAME",
    "ExportResult",
    "export_artifact",
    "file_sha256",
    "onnx_metadata",
    "write_sha256_file",
]

DEFAULT_ARTIFACT_NAME = "deploy_single_label.pt"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sha256: str
    chunk_samples: int
    defect_idx: int
    eval_pool_ratio: float
    threshold: float
    onnx_path: Path | None = None  # the ONNX twin, when written
    onnx_sha256: str | None = None

    def summary_line(self) -> str:
        """The original exporter's second output line."""
        return (
            f"chunk_samples={self.chunk_samples} | defect_idx={self.defect_idx} | "
            f"eval_pool_ratio={self.eval_pool_ratio} | threshold={self.threshold}"
        )


def onnx_metadata(meta: dict[str, Any], source: Path, source_sha256: str) -> dict[str, Any]:
    """The `.pt`'s metadata plus which file the ONNX twin was made from (the loader runs a
    twin only for the `.pt` whose sha256 it names)."""
    return {**meta, "source_file": source.name, "source_sha256": source_sha256}


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
    onnx: bool = True,
    name: str | None = None,
    version: str | None = None,
    ensemble: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> ExportResult:
    """Script `classifier` into a deploy artifact at `output`; returns its sha256. With `onnx`
    its ONNX twin (`output` with `.onnx`) is written too.

    `classifier` is any window scorer with the classifier's contract (windows [T, S] or
    [T, 1, S] -> logits [T, classes]): a `deploy.backbone.WindowClassifier`, or an enrolled
    `deploy.anomaly.AnomalyScorer` / `FusedScorer`.

    `defect_idx` is the classifier's output index of the defect class; `provenance` (training
    run, config, metrics, data) is stored verbatim in the metadata; `name` and `version` are
    the human-readable model name and version events carry beside the sha256. `ensemble`
    (members, seeds, width) and `calibration` (the out-of-fold threshold's figures and its
    uncertain `band`, `training.oof`) are stored as the metadata keys of those names.
    """
    check_model_identity(name, version)
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
    if name is not None:
        meta["model_name"] = name
    if version is not None:
        meta["model_version"] = version
    if ensemble is not None:
        meta["ensemble"] = ensemble
    if calibration is not None:
        meta["calibration"] = calibration
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
    result = ExportResult(output, sha, chunk_samples, defect_idx, eval_pool_ratio, threshold)
    if not onnx:
        return result
    from deploy.onnx_export import export_onnx

    twin = export_onnx(
        WindowScorer(base, defect_idx),
        onnx_twin(output),
        chunk_samples=chunk_samples,
        metadata=onnx_metadata(meta, output, sha),
    )
    return ExportResult(
        output, sha, chunk_samples, defect_idx, eval_pool_ratio, threshold, twin.path, twin.sha256
    )
