"""What a deploy artifact says about itself, for `weldmon model info`: read, never run, and
without torch (a monitor box installs without it).

A `.pt` is a zip archive: this project's metadata is its extra file `weldmon_meta.json`; the
contract's values (threshold, chunk_samples, ...) are plain attributes of the top-level module
in `data.pkl`, which is all the original pipeline's artifacts carry. That pickle is read with
an unpickler that builds nothing the file names: every class it asks for is an inert
placeholder and every tensor storage stays unread, so no code from the file runs. `torch.jit.load`
would do the same work but needs torch; the daemon's loader (`deploy.loader`) still checks
everything before a model is used. A `.onnx` keeps the same JSON in its metadata_props.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from deploy.calibration import calibration_of, calibration_warnings
from deploy.contract import (
    LABEL_NAMES,
    LEGACY_SAMPLE_RATE,
    META_EXTRA_FILE,
    ModelContract,
    check_format_version,
    model_identity,
)
from deploy.digest import file_sha256
from deploy.errors import ArtifactError
from deploy.frontend_params import FrontEndParams
from deploy.inputs import MAX_ARTIFACT_BYTES, check_input_file

ONNX_SUFFIX = ".onnx"
LEGACY_NOTE = (
    "the original pipeline's artifact: no metadata; weldmon assumes 16 kHz and the original "
    "front end (the defaults shown), which its scripted code computes"
)
TUNED_ON_NOTE = (
    "the training run's validation figures at the exported epoch: the threshold was tuned on "
    "the same folders, so they are optimistic; judge a model by `weldmon cv` or `weldmon "
    "evaluate` on folders it never saw"
)


class _Placeholder:
    """Whatever class the pickle names: keeps the state it is given, does nothing else."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args = args
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:  # never the real class
        return _Placeholder

    def persistent_load(self, pid: object) -> object:  # tensor storages stay in the zip
        return None


def _module_attributes(path: Path, zf: zipfile.ZipFile, names: list[str]) -> dict[str, Any]:
    """The top-level module's plain attributes (ints, floats, strings, booleans)."""
    pickles = sorted((n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")), key=len)
    if not pickles:
        raise ArtifactError(f"{path}: a zip archive without data.pkl: not a TorchScript artifact")
    try:
        root = _InertUnpickler(io.BytesIO(zf.read(pickles[0]))).load()
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError, TypeError) as exc:
        raise ArtifactError(f"{path}: data.pkl cannot be read ({exc})") from exc
    state = root.state if isinstance(root, _Placeholder) else None
    if not isinstance(state, dict):
        raise ArtifactError(f"{path}: data.pkl holds no module: not a deploy artifact")
    return {k: v for k, v in state.items() if isinstance(v, int | float | str | bool)}


def _read_pt(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(module attributes, metadata) of a `.pt` archive; metadata is {} for the original's."""
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path}: not a deploy artifact (neither a .onnx nor a zip archive)")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if not any("/code/" in n for n in names):
            raise ArtifactError(
                f"{path}: a torch.save file (e.g. a training checkpoint), not a TorchScript "
                "deploy artifact; export it with `weldmon export`"
            )
        attrs = _module_attributes(path, zf, names)
        extra = [n for n in names if n.endswith(f"/extra/{META_EXTRA_FILE}")]
        meta: dict[str, Any] = {}
        if extra:
            try:
                meta = json.loads(zf.read(extra[0]) or b"{}")
            except json.JSONDecodeError as exc:
                raise ArtifactError(f"{path}: metadata {META_EXTRA_FILE} is not JSON") from exc
    ModelContract.read(str(path), attrs, "not a deploy artifact, missing attribute(s)")
    if meta:
        check_format_version(str(path), meta)
    return attrs, meta


def _evaluation(provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The evaluation figures embedded at export or enrollment, each with what they are."""
    out: dict[str, Any] = {}
    metrics = provenance.get("metrics")
    if isinstance(metrics, dict) and metrics:
        out["training_validation"] = {"note": TUNED_ON_NOTE, "metrics": metrics}
    if "loo_false_alarm_rate" in provenance:
        out["enrollment"] = {
            "note": "false-alarm rate of the enrolled good welds, each left out in turn",
            "loo_false_alarm_rate": provenance["loo_false_alarm_rate"],
            "false_alarm_rate_requested": provenance.get("false_alarm_rate"),
        }
    if isinstance(provenance.get("evaluation"), dict):
        out["evaluation"] = provenance["evaluation"]
    return out or None


def _twin(path: Path, sha256: str) -> dict[str, Any]:
    twin = path.with_suffix(ONNX_SUFFIX)
    if not twin.is_file():
        return {"path": str(twin), "present": False}
    try:
        source = _read_onnx(twin).get("source_sha256")
    except ArtifactError as exc:
        return {"path": str(twin), "present": True, "error": str(exc)}
    return {
        "path": str(twin),
        "present": True,
        "sha256": file_sha256(twin),
        "made_from_this_file": source == sha256,
    }


def _read_onnx(path: Path) -> dict[str, Any]:
    from deploy.onnx_model import read_onnx_metadata  # onnxruntime: a base dependency

    return read_onnx_metadata(path)


def artifact_info(path: str | Path) -> dict[str, Any]:
    """Everything an artifact says about itself, as one JSON-ready dict; ArtifactError for a
    file that is not a deploy artifact."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file")
    check_input_file(path, MAX_ARTIFACT_BYTES, "", ArtifactError)
    try:
        return _info(path)
    except OSError as exc:  # a file that stat() could see but not read (EACCES, EIO)
        raise ArtifactError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _info(path: Path) -> dict[str, Any]:
    sha = file_sha256(path)
    if path.suffix == ONNX_SUFFIX:
        meta = _read_onnx(path)
        contract = {name: meta[name] for name in ModelContract.names()}
        fmt = "onnx"
    else:
        attrs, meta = _read_pt(path)
        contract = {name: attrs[name] for name in ModelContract.names()}
        fmt = "torchscript"
    legacy = not meta or bool(meta.get("legacy_source"))
    name, version = model_identity(meta)
    stored = meta.get("provenance")
    provenance: dict[str, Any] = stored if isinstance(stored, dict) else {}
    frontend = meta.get("frontend") or FrontEndParams().as_dict()
    info: dict[str, Any] = {
        "path": str(path),
        "sha256": sha,
        "format": fmt,
        "name": name,
        "version": version,
        "legacy": legacy,
        "format_version": meta.get("format_version"),
        "kind": meta.get("kind") or (meta.get("model") or {}).get("kind") or "classifier",
        "threshold": contract["threshold"],
        "contract": {
            "sample_rate": int(meta.get("sample_rate", LEGACY_SAMPLE_RATE)),
            **contract,
            "label_names": meta.get("label_names", LABEL_NAMES),
        },
        "frontend": frontend,
        "frontend_stored": bool(meta.get("frontend")) and not legacy,
        "model": meta.get("model") or None,
        "provenance": provenance or None,
        "evaluation": _evaluation(provenance),
    }
    ensemble = meta.get("ensemble")
    if isinstance(ensemble, dict):
        info["ensemble"] = ensemble
    calibration = calibration_of(meta)
    if calibration is not None:
        info["calibration"] = calibration
        info["warnings"] = calibration_warnings(calibration)
    if fmt == "torchscript":
        info["onnx_twin"] = _twin(path, sha)
    else:
        info["source"] = {"file": meta.get("source_file"), "sha256": meta.get("source_sha256")}
    if legacy:
        info["note"] = LEGACY_NOTE
    return info
