"""The deploy contract's facts that need no torch: names, format version, metadata checks.

Both artifact formats carry the same contract: a TorchScript `.pt` (attributes on the module
plus a JSON extra file) and its ONNX twin (the same JSON in the model's metadata_props). Both
loaders check them here, so a bad value gets the same message whichever file it came in.
"""

from __future__ import annotations

import re
from typing import Any

from deploy.errors import ArtifactError

ARTIFACT_FORMAT_VERSION = 1  # bump when the exported interface changes
META_EXTRA_FILE = "weldmon_meta.json"  # in the .pt: an extra file, readable without running code
META_ONNX_KEY = "weldmon_meta"  # in the .onnx: a metadata_props entry with the same JSON
LABEL_NAMES = ["good_weld", "defect"]  # output label 0 / 1 of every deploy artifact
LEGACY_SAMPLE_RATE = 16000  # the original pipeline stored no rate; it assumed 16 kHz
CONTRACT_FIELDS = ("chunk_samples", "defect_idx", "eval_pool_ratio", "threshold")
# Longest window any artifact may ask for: 2**24 samples (64 MiB of float32, 17 min at
# 16 kHz). Windows are allocated from it (the self-test, every batch), so a corrupt or hostile
# value such as 2**40 would otherwise ask for terabytes.
MAX_CHUNK_SAMPLES = 2**24
# A human-readable model name and version (metadata keys model_name / model_version), set at
# export or enrollment and shown in events beside model_sha256. Printable, one line, short.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._+:/-]{0,63}$"
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$"


def check_contract_values(where: str, values: dict[str, Any]) -> None:
    """Refuse contract values of the wrong type or range, naming each one."""
    checks = {
        "chunk_samples": isinstance(values.get("chunk_samples"), int)
        and 0 < values["chunk_samples"] <= MAX_CHUNK_SAMPLES,
        "defect_idx": isinstance(values.get("defect_idx"), int) and values["defect_idx"] >= 0,
        "eval_pool_ratio": isinstance(values.get("eval_pool_ratio"), float)
        and 0.0 < values["eval_pool_ratio"] <= 1.0,
        "threshold": isinstance(values.get("threshold"), float)
        and 0.0 <= values["threshold"] <= 1.0,
    }
    bad = {name: values.get(name) for name, ok in checks.items() if not ok}
    if bad:
        raise ArtifactError(f"{where}: invalid attribute value(s) {bad}")


def check_format_version(where: str, meta: dict[str, Any]) -> None:
    """Refuse metadata written by a newer weldmon than this one."""
    if int(meta.get("format_version", -1)) > ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: artifact format {meta.get('format_version')} is newer than this weldmon "
            f"understands ({ARTIFACT_FORMAT_VERSION}); upgrade weldmon"
        )


def check_model_identity(name: str | None, version: str | None) -> None:
    """Refuse a model name or version that would not read well in an event or a UI
    (ValueError naming the value and the rule)."""
    rules = (
        ("model name", name, MODEL_NAME_PATTERN),
        ("model version", version, MODEL_VERSION_PATTERN),
    )
    for what, value, pattern in rules:
        if value is not None and not re.fullmatch(pattern, value):
            raise ValueError(f"{what} {value!r} must match {pattern}")


def model_identity(meta: dict[str, Any]) -> tuple[str | None, str | None]:
    """(name, version) from an artifact's metadata; None for what it does not say (the
    original pipeline's artifacts say neither)."""
    name, version = meta.get("model_name"), meta.get("model_version")
    return (name if isinstance(name, str) else None, version if isinstance(version, str) else None)
