"""The deploy contract's facts that need no torch: names, format version, metadata checks.

Both artifact formats carry the same contract: a TorchScript `.pt` (attributes on the module
plus a JSON extra file) and its ONNX twin (the same JSON in the model's metadata_props). Both
loaders check them here, so a bad value gets the same message whichever file it came in.
"""

from __future__ import annotations

from typing import Any

from deploy.errors import ArtifactError

ARTIFACT_FORMAT_VERSION = 1  # bump when the exported interface changes
META_EXTRA_FILE = "weldmon_meta.json"  # in the .pt: an extra file, readable without running code
META_ONNX_KEY = "weldmon_meta"  # in the .onnx: a metadata_props entry with the same JSON
LABEL_NAMES = ["good_weld", "defect"]  # output label 0 / 1 of every deploy artifact
LEGACY_SAMPLE_RATE = 16000  # the original pipeline stored no rate; it assumed 16 kHz
CONTRACT_FIELDS = ("chunk_samples", "defect_idx", "eval_pool_ratio", "threshold")


def check_contract_values(where: str, values: dict[str, Any]) -> None:
    """Refuse contract values of the wrong type or range, naming each one."""
    checks = {
        "chunk_samples": isinstance(values.get("chunk_samples"), int)
        and values["chunk_samples"] > 0,
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
