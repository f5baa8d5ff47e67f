"""Deploy artifacts made for tests: a seeded, freshly initialised classifier exported with the
project's own exporter (real TorchScript, real weights, just untrained)."""

from __future__ import annotations

from pathlib import Path

import torch

from deploy.backbone import BackboneParams, WindowClassifier
from deploy.ensemble import EnsembleClassifier
from deploy.export import DEFAULT_ARTIFACT_NAME, ExportResult, export_artifact
from deploy.frontend import FrontEndParams


def untrained_classifier(seed: int = 7, width: int = 32) -> WindowClassifier:
    """A seeded classifier whose BatchNorm statistics spread its window probabilities."""
    torch.manual_seed(seed)
    classifier = WindowClassifier(backbone=BackboneParams(width=width)).eval()
    # Untrained BatchNorm running stats (mean 0, var 1) squash everything to ~0.5; perturb them
    # so windows get spread-out probabilities and label decisions are actually exercised.
    with torch.no_grad():
        for module in classifier.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return classifier


def export_untrained(
    out_dir: Path,
    *,
    seed: int = 7,
    threshold: float = 0.5,
    eval_pool_ratio: float = 0.05,
    onnx: bool = False,
    name: str | None = None,
    version: str | None = None,
) -> ExportResult:
    """The `.pt` only unless `onnx` (the ONNX export takes seconds; most tests need no twin);
    `name` / `version`: the model identity events carry."""
    return export_artifact(
        untrained_classifier(seed),
        out_dir / DEFAULT_ARTIFACT_NAME,
        frontend=FrontEndParams(),
        threshold=threshold,
        eval_pool_ratio=eval_pool_ratio,
        provenance={"note": "untrained test artifact", "seed": seed},
        onnx=onnx,
        name=name,
        version=version,
    )


def export_untrained_ensemble(
    out_dir: Path, *, members: int = 5, width: int = 8, seed: int = 7, onnx: bool = False
) -> ExportResult:
    """An ensemble artifact of `members` untrained classifiers (seeds seed, seed+1, ...)."""
    params = BackboneParams(width=width)
    ensemble = EnsembleClassifier.from_members(
        [untrained_classifier(seed + i, width) for i in range(members)], FrontEndParams(), params
    )
    return export_artifact(
        ensemble,
        out_dir / DEFAULT_ARTIFACT_NAME,
        frontend=FrontEndParams(),
        threshold=0.5,
        eval_pool_ratio=0.05,
        model_params=params.as_dict(),
        provenance={"note": "untrained test ensemble", "seed": seed},
        onnx=onnx,
        ensemble={"members": members, "seeds": [seed + i for i in range(members)], "width": width},
    )
