"""Write a window scorer (any `nn.Module`: raw windows [T, chunk_samples] -> probabilities
[T]) as an ONNX deploy artifact, with the contract's metadata in metadata_props.

torch 2.13's exporter is `torch.onnx.export(..., dynamo=True)` (torch.export, then onnxscript
translates the graph; the TorchScript-based exporter is deprecated and slated for removal). It
needs the `onnx` and `onnxscript` packages, which come with the extras that export (`export`,
`train`), not with the base install that only runs artifacts. The window count T stays free
in the graph, so one session judges a whole recording or the daemon's windows from different
welds. After writing, the file is run once under ONNX Runtime and compared with the module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deploy.contract import META_ONNX_KEY, ModelContract
from deploy.digest import file_sha256, write_sha256_file
from deploy.errors import ArtifactError
from deploy.onnx_model import INPUT_NAME, OUTPUT_NAME, load_onnx

# Largest |p_onnx - p_torch| accepted on the probe windows after export. Observed: ~3e-8
# (float32 rounding of re-ordered operations); a wrong graph is off by far more.
EXPORT_TOLERANCE = 1e-5
PROBE_SEED = 0


class ExportDependencyError(ArtifactError):
    """The ONNX exporter's packages (onnx, onnxscript) are not installed."""


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    sha256: str
    max_abs_diff: float  # |ONNX Runtime - torch| on the probe windows


def probe_windows(chunk_samples: int, n: int = 6) -> np.ndarray:
    """Windows that exercise the front end like recordings do: noise at several levels, a
    tone over a 16-bit recorder's noise floor, and digital silence.

    A pure tone without that floor would not do: its far bins then hold only float32
    rounding noise (~1e-9 of power), which torch.stft's FFT and the real DFT round
    differently, so such a window's far mel bands differ by decibels between two exact
    implementations. Real audio never lies under its 16-bit quantisation floor (~2e-8 per
    bin): on the 23 shared recordings the two agree within 3e-7 per window.
    """
    rng = np.random.default_rng(PROBE_SEED)
    t = np.arange(chunk_samples, dtype=np.float64) / 16000.0
    floor = rng.standard_normal(chunk_samples) / 32768.0
    rows = [rng.standard_normal(chunk_samples) * level for level in (1e-3, 1e-2, 0.1, 0.5)]
    rows.append(0.3 * np.sin(2 * np.pi * 1234.5 * t) + floor)
    rows.append(np.zeros(chunk_samples))
    return np.stack(rows[:n]).astype(np.float32)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs a warning per missing optional torchvision op and raises a
    FutureWarning from torch's own pytree code; neither concerns our graph."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*|copyreg")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
            yield
    finally:
        registration.setLevel(level)


def _require_exporter() -> None:
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ModuleNotFoundError:
            missing.append(name)
    if missing:
        raise ExportDependencyError(
            f"ONNX export needs {missing}; install weldmon[export] (or weldmon[train])"
        )


def export_onnx(
    scorer: nn.Module,
    output: Path,
    *,
    chunk_samples: int,
    metadata: dict[str, Any],
) -> OnnxExport:
    """Export `scorer` to `output` (+ `.sha256`), metadata JSON in metadata_props, and check
    the written file under ONNX Runtime against `scorer` on probe windows."""
    ModelContract.read(str(output), metadata, "metadata lacks the contract field(s)")
    _require_exporter()
    import onnx

    scorer = scorer.eval()
    example = torch.from_numpy(probe_windows(chunk_samples, 2))
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            scorer,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("windows", min=1)},),
            external_data=False,
            verbose=False,
        )
    assert program is not None  # the dynamo exporter always returns its program
    proto = program.model_proto
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_ONNX_KEY, json.dumps(metadata, sort_keys=True)
    proto.producer_name, proto.producer_version = "weldmon", str(metadata.get("format_version"))
    proto.doc_string = (
        f"weldmon deploy artifact: {INPUT_NAME} float32 [T, {chunk_samples}] -> "
        f"{OUTPUT_NAME} float32 [T]; pool and threshold with the metadata in {META_ONNX_KEY}"
    )
    onnx.checker.check_model(proto)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    onnx.save_model(proto, str(tmp))
    sha = file_sha256(tmp)
    probes = probe_windows(chunk_samples)
    with torch.no_grad():
        expected = scorer(torch.from_numpy(probes)).numpy()
    got = load_onnx(tmp, sha, threads=1).window_probs(probes)
    diff = float(np.abs(got - expected).max())
    if not diff <= EXPORT_TOLERANCE:
        tmp.unlink()
        raise ArtifactError(
            f"{output}: ONNX Runtime differs from torch by {diff:.2e} on the probe windows "
            f"(limit {EXPORT_TOLERANCE:g}); nothing written"
        )
    tmp.replace(output)  # atomic: a reader never sees a half-written artifact
    write_sha256_file(output, sha)
    return OnnxExport(output, sha, diff)
