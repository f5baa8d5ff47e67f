"""The arc segmenter's frame classifier: a tiny MLP over `arc_features` rows, and its artifact.

The artifact is one small JSON file: the feature settings it was trained on, the
standardisation, the weights, how it was trained, and the sha256 of all of that (so a copied
or edited file is caught at load). Inference is numpy only, so the torch-free monitor box
runs it; ``einsum`` computes each row on its own, so a frame's probability does not depend on
how many frames were computed with it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from deploy.errors import WeldmonError
from deploy.segment.arc_features import FeatureConfig, feature_names

FORMAT = "weldmon-arc-segmenter/1"
log = structlog.get_logger(__name__)
# The model trained on the 23 shared recordings (`weldmon train-segmenter`), shipped with the code.
SHIPPED_MODEL = Path(__file__).with_name("arc_model.json")


class ArcModelError(WeldmonError):
    """An arc-segmenter artifact that cannot be read or does not fit its features."""


@dataclass(frozen=True)
class ArcModel:
    """P(arc on) for feature rows: standardise, one tanh hidden layer, a logistic output."""

    config: FeatureConfig
    mean: np.ndarray  # [features]
    scale: np.ndarray  # [features], positive
    w1: np.ndarray  # [features, hidden]
    b1: np.ndarray  # [hidden]
    w2: np.ndarray  # [hidden]
    b2: float
    trained: dict[str, Any] = field(default_factory=dict)  # how (data, seed, command)

    def probability(self, rows: np.ndarray) -> np.ndarray:
        """P(arc on) for each feature row (float64 [frames])."""
        if rows.shape[0] == 0:
            return np.zeros(0)
        z = (rows - self.mean) / self.scale
        h = np.tanh(np.einsum("ij,jk->ik", z, self.w1) + self.b1)
        logit = np.einsum("ij,j->i", h, self.w2) + self.b2
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(logit, -40.0, 40.0))))

    def payload(self) -> dict[str, Any]:
        """Everything the artifact holds but its checksum, as JSON values."""
        return {
            "format": FORMAT,
            "features": self.config.as_dict(),
            "feature_names": feature_names(self.config.meter().profile_bands),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "w1": self.w1.tolist(),
            "b1": self.b1.tolist(),
            "w2": self.w2.tolist(),
            "b2": self.b2,
            "trained": self.trained,
        }

    def save(self, path: Path) -> str:
        """Write the artifact; returns its sha256."""
        payload = self.payload()
        digest = payload_digest(payload)
        text = json.dumps({**payload, "sha256": digest}, indent=1, sort_keys=True)
        Path(path).write_text(text + "\n", encoding="utf-8")
        return digest


def payload_digest(payload: dict[str, Any]) -> str:
    """The sha256 an artifact stores: of its payload as canonical JSON (sorted keys, no
    spaces), so formatting the file does not change it."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _array(doc: dict[str, Any], key: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    try:
        arr = np.asarray(doc[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArcModelError(f"{path}: {key!r} is missing or not numbers") from exc
    if arr.shape != shape:
        raise ArcModelError(f"{path}: {key!r} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise ArcModelError(f"{path}: {key!r} holds NaN or Inf")
    return arr


def load_arc_model(path: Path | None = None) -> ArcModel:
    """The artifact at ``path`` (default: the shipped one), checked: its format, its sha256,
    its feature settings and every array's shape. Raises ArcModelError naming what is wrong."""
    path = Path(path) if path is not None else SHIPPED_MODEL
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArcModelError(f"{path}: cannot read the arc-segmenter model: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ArcModelError(
            f"{path}: not an arc-segmenter model (format {found!r}, need {FORMAT!r})"
        )
    stored = doc.pop("sha256", None)
    if stored != payload_digest(doc):
        raise ArcModelError(f"{path}: sha256 does not match its contents (edited or damaged)")
    try:
        config = FeatureConfig(**doc["features"])
    except (KeyError, TypeError) as exc:
        raise ArcModelError(f"{path}: bad feature settings: {exc}") from exc
    counts = (config.sample_rate, config.behind, config.lookahead)
    if (
        not all(isinstance(v, int) for v in counts)
        or config.sample_rate <= 0
        or config.frame_len <= 0
        or config.behind < 0
        or config.lookahead < 0
    ):
        raise ArcModelError(f"{path}: bad feature settings {doc['features']}")
    bands = config.meter().profile_bands
    width = len(feature_names(bands))
    if doc.get("feature_names") != feature_names(bands):
        raise ArcModelError(
            f"{path}: trained on other features than this weldmon computes; retrain it with "
            "`weldmon train-segmenter`"
        )
    w1 = np.asarray(doc.get("w1", []), dtype=np.float64)
    hidden = w1.shape[1] if w1.ndim == 2 else -1
    if hidden <= 0:
        raise ArcModelError(f"{path}: 'w1' must be a [features, hidden] matrix")
    b2 = doc.get("b2")
    if not isinstance(b2, (int, float)) or not math.isfinite(b2):
        raise ArcModelError(f"{path}: 'b2' must be a finite number")
    scale = _array(doc, "scale", (width,), path)
    if np.any(scale <= 0.0):
        raise ArcModelError(f"{path}: 'scale' must be positive")
    return ArcModel(
        config,
        _array(doc, "mean", (width,), path),
        scale,
        _array(doc, "w1", (width, hidden), path),
        _array(doc, "b1", (hidden,), path),
        _array(doc, "w2", (hidden,), path),
        float(b2),
        dict(doc.get("trained", {})),
    )


@functools.lru_cache(maxsize=8)
def _cached(path: Path, mtime_ns: int, size: int) -> ArcModel:
    return load_arc_model(path)


# The model last loaded from each path: a running daemon builds a segmenter per station and
# stream epoch, so a file removed or damaged after startup must not stop it from judging.
_last_loaded: dict[Path, ArcModel] = {}


def cached_arc_model(path: Path | None = None) -> ArcModel:
    """`load_arc_model`, read once per file version: every station and stream epoch shares
    the one loaded model (a retrained file, with a new modification time, is read again).
    A file that can no longer be read, once it was, keeps the model last loaded from it (a
    warning says so); one that never loaded raises ArcModelError."""
    path = Path(path).resolve() if path is not None else SHIPPED_MODEL
    try:
        stat = path.stat()
        model = _cached(path, stat.st_mtime_ns, stat.st_size)
    except (OSError, ArcModelError) as exc:
        if path in _last_loaded:
            log.warning("arc_model_unreadable_keeping_loaded", path=str(path), error=str(exc))
            return _last_loaded[path]
        if isinstance(exc, ArcModelError):
            raise
        raise ArcModelError(f"{path}: cannot read the arc-segmenter model: {exc}") from exc
    _last_loaded[path] = model
    return model
