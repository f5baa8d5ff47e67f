"""The ONNX Runtime backend: a `.onnx` deploy artifact, run without torch.

The graph judges windows: input `windows` float32 [T, chunk_samples] (T free, windows from any
recordings or welds), output `window_probs` float32 [T]. Mixing, cutting, pooling and the
threshold happen outside it, in `deploy.model`, exactly as for a TorchScript artifact. The
contract's values and the rest of the metadata travel as JSON in the model's metadata_props
(`weldmon_meta`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from deploy.contract import META_ONNX_KEY, ModelContract, check_format_version
from deploy.errors import ArtifactError
from deploy.model import DeployModel

INPUT_NAME = "windows"  # float32 [T, chunk_samples]
OUTPUT_NAME = "window_probs"  # float32 [T]


def session_options(threads: int | None) -> ort.SessionOptions:
    """One inference at a time; `threads` intra-op threads (None: ONNX Runtime's default, one
    per physical core). With 1 thread ONNX Runtime starts no pool, so nothing spins."""
    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    return options


def _open(path: Path, threads: int | None, data: bytes | None = None) -> ort.InferenceSession:
    """A session on `data` (the bytes the caller hashed) or, without it, on the file."""
    if data is None and not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    try:
        return ort.InferenceSession(
            data if data is not None else str(path),
            session_options(threads),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # ONNX Runtime raises its own untyped errors for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: not a loadable ONNX deploy artifact ({first})") from exc


def _metadata(path: Path, session: ort.InferenceSession) -> dict[str, Any]:
    props = session.get_modelmeta().custom_metadata_map
    if META_ONNX_KEY not in props:
        raise ArtifactError(
            f"{path}: an ONNX model without weldmon metadata ({META_ONNX_KEY}); "
            "make deploy artifacts with `weldmon export` or `weldmon convert`"
        )
    try:
        meta = json.loads(props[META_ONNX_KEY])
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: metadata {META_ONNX_KEY} is not valid JSON") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: metadata {META_ONNX_KEY} is not a JSON object")
    check_format_version(str(path), meta)
    ModelContract.read(str(path), meta, "metadata lacks the contract field(s)")
    return meta


def _check_signature(path: Path, session: ort.InferenceSession, chunk_samples: int) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names_ok = [i.name for i in inputs] == [INPUT_NAME] and OUTPUT_NAME in [o.name for o in outputs]
    if not names_ok:
        raise ArtifactError(
            f"{path}: graph takes {[i.name for i in inputs]} and gives "
            f"{[o.name for o in outputs]}; a deploy artifact takes [{INPUT_NAME!r}] and gives "
            f"{OUTPUT_NAME!r}"
        )
    shape = inputs[0].shape
    if inputs[0].type != "tensor(float)" or len(shape) != 2 or shape[1] != chunk_samples:
        raise ArtifactError(
            f"{path}: input {INPUT_NAME!r} is {inputs[0].type} {shape}, the metadata says "
            f"float windows of {chunk_samples} samples"
        )


class OnnxModel(DeployModel):
    """A `.onnx` artifact in an ONNX Runtime session."""

    backend = "onnx"

    def __init__(
        self, path: Path, session: ort.InferenceSession, sha256: str, meta: dict[str, Any]
    ) -> None:
        super().__init__(
            path,
            sha256,
            meta,
            chunk_samples=int(meta["chunk_samples"]),
            defect_idx=int(meta["defect_idx"]),
            eval_pool_ratio=float(meta["eval_pool_ratio"]),
            threshold=float(meta["threshold"]),
            legacy=bool(meta.get("legacy_source", False)),
        )
        self.session = session

    def _window_probs(self, windows: np.ndarray) -> np.ndarray:
        probs: np.ndarray = self.session.run([OUTPUT_NAME], {INPUT_NAME: windows})[0]
        return probs


def read_onnx_metadata(path: Path) -> dict[str, Any]:
    """The checked weldmon metadata of an ONNX artifact (opens it once, runs nothing)."""
    return _metadata(path, _open(path, 1))


def load_onnx(
    path: Path, sha256: str, threads: int | None = None, *, data: bytes | None = None
) -> OnnxModel:
    """Load and check a `.onnx` artifact whose sha256 the caller has computed (and pinned);
    with `data`, from exactly those bytes (the ones that were hashed)."""
    session = _open(path, threads, data)
    meta = _metadata(path, session)
    _check_signature(path, session, int(meta["chunk_samples"]))
    return OnnxModel(path, session, sha256, meta)
