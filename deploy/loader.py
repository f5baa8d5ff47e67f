"""Load any deploy artifact into one `DeployModel`: a TorchScript `.pt` (this project's or the
original pipeline's) or its ONNX twin, with the backend chosen by `backend`.

- `torchscript`: the `.pt` itself, run by torch.
- `onnx`: ONNX Runtime: the `.onnx` named, or the `.onnx` beside a named `.pt`.
- `auto` (default): ONNX Runtime for a `.onnx`, and for a `.pt` whose ONNX twin (same name,
  `.onnx`) sits beside it; TorchScript otherwise.

A twin is used only if its metadata names the `.pt`'s sha256 as its source, so a stale
`.onnx` is refused, never silently run. Each file is read once: the bytes that are hashed
(and checked against the pin) are the bytes that are loaded, so a file swapped between the
check and the load can never run under the pinned hash. The sha256 pin always applies to the
file named; its sha256 is the model's identity in reports and events, and
`runtime_path`/`runtime_sha256` name the file that actually runs. torch is imported only
for TorchScript.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from deploy.digest import bytes_sha256, check_sha256_pin, sha256_matches
from deploy.errors import ArtifactError
from deploy.inputs import MAX_ARTIFACT_BYTES, read_input_bytes
from deploy.model import DEFAULT_BATCH_WINDOWS, DeployModel, Verdict

__all__ = [
    "BACKENDS",
    "DEFAULT_BATCH_WINDOWS",
    "Backend",
    "DeployModel",
    "Verdict",
    "load_artifact",
    "onnx_twin",
]

Backend = Literal["auto", "onnx", "torchscript"]
BACKENDS: tuple[Backend, ...] = ("auto", "onnx", "torchscript")
ONNX_SUFFIX = ".onnx"


def onnx_twin(path: Path) -> Path:
    """Where the ONNX twin of a `.pt` artifact lives: same folder, same name, `.onnx`."""
    return Path(path).with_suffix(ONNX_SUFFIX)


def _convert_hint(path: Path) -> str:
    return f"weldmon convert --model {path} --output {onnx_twin(path)}"


def _read(path: Path) -> tuple[bytes, str]:
    """The file's bytes and their sha256, from one read (its size checked first)."""
    data = read_input_bytes(path, MAX_ARTIFACT_BYTES, "", ArtifactError)
    return data, bytes_sha256(data)


def _load_onnx(path: Path, data: bytes, sha256: str, threads: int | None) -> DeployModel:
    from deploy.onnx_model import load_onnx

    return load_onnx(path, sha256, threads, data=data)


def _load_torchscript(path: Path, data: bytes, sha256: str, threads: int | None) -> DeployModel:
    try:
        from deploy.torchscript_model import load_torchscript
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise ArtifactError(
            f"{path}: a TorchScript artifact needs torch, which is not installed; install "
            f"weldmon[torch], or run its ONNX twin (on a machine with torch: {_convert_hint(path)})"
        ) from exc
    return load_torchscript(path, sha256, threads, data=data)


def _load_twin(path: Path, sha256: str, threads: int | None) -> DeployModel:
    twin = onnx_twin(path)
    if not twin.is_file():
        raise ArtifactError(
            f"{path}: no ONNX twin {twin} beside it; make one: {_convert_hint(path)}"
        )
    data, twin_sha = _read(twin)
    model = _load_onnx(twin, data, twin_sha, threads)
    source = model.metadata.get("source_sha256")
    if source != sha256:
        raise ArtifactError(
            f"{twin}: converted from a file with sha256 {source}, not from {path} ({sha256}); "
            f"convert it again ({_convert_hint(path)}) or remove it"
        )
    model.runtime_path, model.runtime_sha256 = model.path, model.sha256
    model.path, model.sha256 = path, sha256
    return model


def load_artifact(
    path: str | Path,
    expected_sha256: str | None = None,
    *,
    backend: Backend = "auto",
    threads: int | None = None,
) -> DeployModel:
    """Load and check a deploy artifact; `expected_sha256` pins the named file; `threads` caps
    the intra-op threads of its forward passes (None: the backend's default)."""
    path = Path(path)
    if backend not in BACKENDS:
        raise ArtifactError(f"unknown inference backend {backend!r}; choose one of {BACKENDS}")
    check_sha256_pin(expected_sha256)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file")
    data, sha = _read(path)
    if not sha256_matches(sha, expected_sha256):
        raise ArtifactError(f"{path}: sha256 {sha} does not match the pinned {expected_sha256}")
    if path.suffix == ONNX_SUFFIX:
        if backend == "torchscript":
            raise ArtifactError(f"{path}: an ONNX artifact; the torchscript backend runs a .pt")
        return _load_onnx(path, data, sha, threads)
    if backend == "onnx" or (backend == "auto" and onnx_twin(path).is_file()):
        return _load_twin(path, sha, threads)
    return _load_torchscript(path, data, sha, threads)
