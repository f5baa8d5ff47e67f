"""`.pt` -> `.onnx`: rebuild a deploy artifact's window scorer as a plain module from the
TorchScript archive's weights and metadata, and export that with `deploy.onnx_export`.

A scripted artifact cannot be exported as it is: the original pipeline's compute their
spectrum with `torch.stft`, whose complex output ONNX cannot carry, and TorchScript is not
what torch 2.13's exporter reads. Each kind of artifact names how its scorer is rebuilt
(`SCORER_BUILDERS`, keyed by the metadata's `kind`; an artifact without metadata is the
original pipeline's classifier). The rebuilt scorer must reproduce the archive's own window
probabilities on probe windows before anything is written. Artifacts made from a module in
this process (`weldmon export`, `deploy.export.export_artifact` with `onnx=True`) need no
rebuild: their twin is exported from that module directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deploy.artifact import WindowScorer
from deploy.backbone import BackboneParams, WindowClassifier
from deploy.contract import ARTIFACT_FORMAT_VERSION, LABEL_NAMES, LEGACY_SAMPLE_RATE
from deploy.digest import file_sha256
from deploy.ensemble import EnsembleClassifier
from deploy.errors import ArtifactError
from deploy.export import onnx_metadata
from deploy.frontend_params import FrontEndParams
from deploy.inputs import MAX_ARTIFACT_BYTES, check_input_file
from deploy.onnx_export import EXPORT_TOLERANCE, OnnxExport, export_onnx, probe_windows
from deploy.onnx_model import load_onnx
from deploy.torchscript_model import TorchScriptModel, read_torchscript

CLASSIFIER_KIND = "classifier"  # the MIL CNN: softmax of base_model's logits at defect_idx
# Kinds of window scorer named in an artifact's metadata ("model": {"kind": ...}) that are not
# the classifier; each needs its own entry in SCORER_BUILDERS before it can be converted.
SCORER_KINDS_OTHER_THAN_CLASSIFIER = ("anomaly", "fused")

ScorerBuilder = Callable[[torch.jit.ScriptModule, dict[str, Any]], nn.Module]


@dataclass(frozen=True)
class Conversion:
    source: Path
    source_sha256: str
    onnx: OnnxExport
    max_abs_diff: float  # |ONNX Runtime - the archive's own window_probs| on probe windows


def classifier_scorer(module: torch.jit.ScriptModule, meta: dict[str, Any]) -> nn.Module:
    """Our `WindowClassifier` (or, for an ensemble's archive, `EnsembleClassifier`) with the
    archive's `base_model` weights (its module names and Sequential indices are the
    original's, so the state dict loads as it is)."""
    try:
        frontend = FrontEndParams(**meta["frontend"]) if meta.get("frontend") else FrontEndParams()
        params = BackboneParams(**meta["model"]) if meta.get("model") else BackboneParams()
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"its metadata does not describe the known CNN ({exc})") from exc
    ensemble = meta.get("ensemble") if isinstance(meta.get("ensemble"), dict) else None
    classifier: nn.Module
    if ensemble:  # K members behind one front end (deploy.ensemble)
        members = int(ensemble.get("members", 0))
        if members < 1:
            raise ArtifactError(f"its ensemble metadata names {members} members")
        classifier = EnsembleClassifier(frontend, params, members, int(module.defect_idx))
    else:
        classifier = WindowClassifier(frontend, params)
    # A scripted module's state dict also holds non-persistent buffers (the front end's DFT
    # bases, derived from its window and rebuilt on load): not weights, so not loaded.
    derived = {name for name, _ in classifier.named_buffers()} - set(classifier.state_dict())
    state = {k: v for k, v in module.base_model.state_dict().items() if k not in derived}
    try:
        classifier.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ArtifactError(f"its base_model is not the known CNN ({first})") from exc
    return WindowScorer(classifier.eval(), int(module.defect_idx))


SCORER_BUILDERS: dict[str, ScorerBuilder] = {CLASSIFIER_KIND: classifier_scorer}


def legacy_metadata(module: torch.jit.ScriptModule) -> dict[str, Any]:
    """What the original's artifacts leave unsaid, stated: 16 kHz, our front end's defaults
    (which its `base_model` reproduces), the two labels."""
    return {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "sample_rate": LEGACY_SAMPLE_RATE,
        "chunk_samples": int(module.chunk_samples),
        "label_names": LABEL_NAMES,
        "defect_idx": int(module.defect_idx),
        "eval_pool_ratio": float(module.eval_pool_ratio),
        "threshold": float(module.threshold),
        "frontend": FrontEndParams().as_dict(),
        "model": BackboneParams().as_dict(),
        "provenance": {"note": "the original pipeline's artifact: no metadata, 16 kHz assumed"},
        "legacy_source": True,
    }


def convert_artifact(source: Path, output: Path) -> Conversion:
    """Write the ONNX twin of the `.pt` deploy artifact `source` to `output` (+ `.sha256`)."""
    source = Path(source)
    check_input_file(source, MAX_ARTIFACT_BYTES, "", ArtifactError)
    module, meta = read_torchscript(source)
    sha = file_sha256(source)
    named = (meta.get("model") or {}).get("kind")
    kind = named if named in SCORER_KINDS_OTHER_THAN_CLASSIFIER else CLASSIFIER_KIND
    if kind not in SCORER_BUILDERS:
        raise ArtifactError(
            f"{source}: artifacts of kind {kind!r} cannot be converted (known: "
            f"{sorted(SCORER_BUILDERS)})"
        )
    try:
        scorer = SCORER_BUILDERS[kind](module, meta).eval()
    except ArtifactError as exc:
        raise ArtifactError(f"{source}: {exc}") from exc
    chunk = int(module.chunk_samples)
    probes = probe_windows(chunk)
    reference = TorchScriptModel(source, module, sha, meta).window_probs(probes)
    with torch.no_grad():
        rebuilt = scorer(torch.from_numpy(probes)).numpy()
    diff = float(np.abs(rebuilt - reference).max())
    if not diff <= EXPORT_TOLERANCE:
        raise ArtifactError(
            f"{source}: the rebuilt scorer differs from the artifact by {diff:.2e} on probe "
            f"windows (limit {EXPORT_TOLERANCE:g}); nothing written"
        )
    full_meta = meta or legacy_metadata(module)
    twin = export_onnx(
        scorer, Path(output), chunk_samples=chunk, metadata=onnx_metadata(full_meta, source, sha)
    )
    got = load_onnx(twin.path, twin.sha256, threads=1).window_probs(probes)
    return Conversion(source, sha, twin, float(np.abs(got - reference).max()))
