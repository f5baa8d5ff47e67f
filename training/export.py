"""Checkpoint -> deploy artifact: rebuild the classifier from the checkpoint alone, export it
(the `.pt` and its ONNX twin) with `deploy.export.export_artifact`, then load both back and
self-test them. An ensemble run's checkpoint (`training.ensemble`) becomes one artifact
holding every member behind one front end (`deploy.ensemble`), with its `ensemble` and
out-of-fold `calibration` metadata."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from deploy.backbone import BackboneParams, WindowClassifier
from deploy.ensemble import EnsembleClassifier
from deploy.export import ExportResult, export_artifact, file_sha256
from deploy.frontend import FrontEndParams
from deploy.loader import load_artifact
from training.checkpoint import CheckpointError, load_checkpoint


def classifier_from_checkpoint(ckpt: dict) -> nn.Module:
    """The window classifier (front end + backbone, or the ensemble of an ensemble run's
    checkpoint) with the checkpoint's weights."""
    try:
        frontend = FrontEndParams(**ckpt["frontend"])
        params = BackboneParams(**ckpt["model_params"])
        ensemble = ckpt.get("ensemble")
        if ensemble:
            model: nn.Module = EnsembleClassifier(
                frontend, params, int(ensemble["members"]), int(ckpt.get("defect_idx", 1))
            )
        else:
            model = WindowClassifier(frontend, params)
        model.load_state_dict(ckpt["model_state"])
    except (TypeError, RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint does not fit the model: {exc}") from exc
    return model.eval()


def export_checkpoint(
    checkpoint: Path, output: Path, *, name: str | None = None, version: str | None = None
) -> ExportResult:
    """Export `checkpoint` (e.g. RUN/best_model.pt) to `output` and its `.sha256` file.
    `name` / `version` default to the training config's `model_name` / `model_version`."""
    ckpt = load_checkpoint(checkpoint)
    model = classifier_from_checkpoint(ckpt)
    cfg = ckpt["config"]
    name = name if name is not None else cfg.get("model_name")
    version = version if version is not None else cfg.get("model_version")
    frontend = FrontEndParams(**ckpt["frontend"])
    result = export_artifact(
        model,
        Path(output),
        frontend=frontend,
        threshold=float(ckpt["threshold"]),
        eval_pool_ratio=float(cfg["eval_pool_ratio"]),
        defect_idx=int(ckpt.get("defect_idx", 1)),
        chunk_seconds=float(cfg["chunk_seconds"]),
        model_params=dict(ckpt["model_params"]),
        provenance={
            "checkpoint": str(Path(checkpoint).resolve()),
            "checkpoint_sha256": file_sha256(Path(checkpoint)),
            "epoch": int(ckpt["epoch"]),
            "metrics": dict(ckpt.get("metrics", {})),
            "config": dict(cfg),
            "split": ckpt.get("split"),
        },
        name=name,
        version=version,
        ensemble=ckpt.get("ensemble") or None,
        calibration=ckpt.get("calibration") or None,
    )
    load_artifact(result.path, expected_sha256=result.sha256, backend="torchscript").self_test()
    load_artifact(result.path, expected_sha256=result.sha256, backend="onnx").self_test()
    return result
