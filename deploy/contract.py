"""The deploy contract's facts that need no torch: names, format version, metadata checks.

Both artifact formats carry the same contract: a TorchScript `.pt` (attributes on the module
plus a JSON extra file) and its ONNX twin (the same JSON in the model's metadata_props). Both
loaders check them here, so a bad value gets the same message whichever file it came in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Self

from deploy.errors import ArtifactError

ARTIFACT_FORMAT_VERSION = 1  # bump when the exported interface changes
META_EXTRA_FILE = "weldmon_meta.json"  # in the .pt: an extra file, readable without running code
META_ONNX_KEY = "weldmon_meta"  # in the .onnx: a metadata_props entry with the same JSON
LABEL_NAMES = ["good_weld", "defect"]  # output label 0 / 1 of every deploy artifact
LEGACY_SAMPLE_RATE = 16000  # the original pipeline stored no rate; it assumed 16 kHz
# Longest window any artifact may ask for: 2**24 samples (64 MiB of float32, 17 min at
# 16 kHz). Windows are allocated from it (the self-test, every batch), so a corrupt or hostile
# value such as 2**40 would otherwise ask for terabytes.
MAX_CHUNK_SAMPLES = 2**24
# A human-readable model name and version (metadata keys model_name / model_version), set at
# export or enrollment and shown in events beside model_sha256. Printable, one line, short.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._+:/-]{0,63}$"
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$"


@dataclass(frozen=True)
class ModelContract:
    """What the runtime relies on in every artifact: stored twice in a `.pt` (attributes of the
    scripted module and its metadata JSON) and once in an ONNX twin's metadata. The loaders
    read it with `read`, which names every absent field and every bad value."""

    chunk_samples: int  # samples per window at the model's rate, 0 < n <= MAX_CHUNK_SAMPLES
    defect_idx: int  # the output index of the defect class, >= 0
    eval_pool_ratio: float  # share of a weld's windows in its top-k pool, in (0, 1]
    threshold: float  # pooled p_defect at or above which a weld is a defect, in [0, 1]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The contract's field names, in order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def read(cls, where: str, values: Mapping[str, Any], missing: str) -> Self:
        """The contract in `values` (a module's attributes or an artifact's metadata).
        ArtifactError when a field is absent (``"<where>: <missing> [names]"``) or has the
        wrong type or range (all of them named at once)."""
        absent = [name for name in cls.names() if name not in values]
        if absent:
            raise ArtifactError(f"{where}: {missing} {absent}")
        checks = {
            "chunk_samples": isinstance(values["chunk_samples"], int)
            and 0 < values["chunk_samples"] <= MAX_CHUNK_SAMPLES,
            "defect_idx": isinstance(values["defect_idx"], int) and values["defect_idx"] >= 0,
            "eval_pool_ratio": isinstance(values["eval_pool_ratio"], float)
            and 0.0 < values["eval_pool_ratio"] <= 1.0,
            "threshold": isinstance(values["threshold"], float)
            and 0.0 <= values["threshold"] <= 1.0,
        }
        bad = {name: values[name] for name, ok in checks.items() if not ok}
        if bad:
            raise ArtifactError(f"{where}: invalid attribute value(s) {bad}")
        return cls(**{name: values[name] for name in cls.names()})

    def mismatched(self, values: Mapping[str, Any]) -> list[str]:
        """The fields `values` states differently from this contract (absent ones agree)."""
        mine = self.as_dict()
        return [name for name in self.names() if name in values and values[name] != mine[name]]

    def as_dict(self) -> dict[str, Any]:
        """The fields by name, in order."""
        return asdict(self)


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
