"""Good-only enrollment: a deploy artifact from a cell's good welds, no defect examples.

Most factories have plenty of good welds and few labelled defects. Enrollment takes the good
welds under a dataset root (the usual layout; every weld as the daemon cuts it,
`training.features`), embeds each window (`deploy.anomaly.spectral_embedding`), and fits the
cell reference with one of two scorers (`SCORERS`): ``mahalanobis``, the windows' mean and
Ledoit-Wolf-shrunk covariance (`deploy.anomaly.CellReference`), or ``knn``, the k-th nearest
good window, normalised by the good windows' own spread (`deploy.goodonly_knn`). A weld's
p_defect is the top-k pool (the artifact's `eval_pool_ratio`) of its windows' calibrated
distances.

Calibration, leave-one-out: each good weld is scored against the reference fitted without
its config folder (a session never enrolled, the harder case), or without itself when all
welds come from one folder. The logits of those pooled scores are modelled as normal (a
requested false-alarm rate of 1 % is below what 15 welds can show empirically), and the
calibration centre is set so that the artifact's threshold sits at that normal's (1 - rate)
quantile, or just above the observed (1 - rate) quantile when that is higher (pooled top-k
scores have a heavier tail than a normal). The metadata records the empirical leave-one-out
false-alarm rate beside the requested one.

Enrolling into a supervised artifact (`base`) keeps its classifier, front end and pooling
and sets the cell's threshold by the teach-in rule (`deploy.teach_rule`, the daemon's
``weldmon teach`` uses the same): the threshold at the false-alarm rate from the base's
window probabilities on the good welds, within the rule's default guards (the base's
threshold minus 0.1, and 0.95). Keeping the base's threshold flagged a cell's good welds
that score above it (issue 19: 0.47 against 0.35). From 3 good welds on it adds one cell
reference (`deploy.anomaly.FusedScorer`), calibrated the same way against that threshold;
from 1 or 2 it writes the base's classifier alone with the taught threshold (the
leave-one-out calibration needs two others), and below 5 it warns that the calibration is
rough.

`enrollment_cv` is the honest figure: each good config folder in turn is held out, the good
welds of every other good folder are enrolled, and the held-out folder's welds and every
defect weld (never enrolled) are scored; the folds are pooled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from deploy.anomaly import AnomalyScorer, CellReference, FusedScorer, spectral_embedding
from deploy.backbone import BackboneParams, WindowClassifier
from deploy.errors import WeldmonError
from deploy.export import ExportResult, export_artifact
from deploy.frontend import FrontEndParams
from deploy.goodonly_knn import KnnReference, fit_knn
from deploy.loader import DeployModel, load_artifact
from deploy.pooling import topk_pool
from deploy.teach_rule import TaughtThreshold, guards, taught_threshold
from deploy.torchscript_model import TorchScriptModel
from training.dataset import index_dataset
from training.features import Bag, FeatureStore
from training.welds import SegmentationSource

DEFAULT_FALSE_ALARM_RATE = 0.01
SCORERS = ("mahalanobis", "knn")  # the good-only scorers enroll can fit (module docstring)
DEFAULT_SCORER = "mahalanobis"  # the better by `enroll --cv`'s figure (docs/training.md)
# Each scorer's embedding (deploy.anomaly.EMBEDDINGS): the band means for both. With the
# bands' spread and modulation added, one good session of the shared recordings sat far
# from all others (k-NN: 2 false alarms in 15, recall 15 of 40 scorings against 37: a
# figure the choice was made on, docs/training.md); `--embedding` takes the richer
# statistics for a cell whose sessions are alike.
SCORER_EMBEDDINGS = {"mahalanobis": "mean", "knn": "mean"}
DEFAULT_EMBEDDING = SCORER_EMBEDDINGS[DEFAULT_SCORER]
DEFAULT_POOL_RATIO = 0.05  # the original's eval_pool_ratio
ANOMALY_THRESHOLD = 0.5  # an enrolled artifact's threshold: logit 0 = the calibrated quantile
MIN_GOOD_WELDS = 3  # leave-one-out calibration needs a spread of at least two others
STD_FLOOR = 1e-6  # per-dimension std floor before whitening (a constant band)
EIGEN_FLOOR = 1e-9  # smallest covariance eigenvalue kept when whitening
LOGIT_CLAMP = 1e-6  # pooled probabilities clamped away from 0 and 1 before the logit
OBSERVED_MARGIN = 1e-3  # logit margin above a leave-one-out score the threshold must clear


class EnrollmentError(WeldmonError):
    """The good welds cannot make a reference (too few, or none usable)."""


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf shrunk covariance of the rows of `x` (Ledoit & Wolf 2004, the estimator
    scikit-learn's `LedoitWolf` computes; hand-written so the training extra stays small,
    and tested against scikit-learn)."""
    n, p = x.shape
    xc = x - x.mean(axis=0)
    emp = xc.T @ xc / n
    mu = np.trace(emp) / p
    x2 = xc**2
    delta_sum = np.sum((xc.T @ xc) ** 2) / n**2
    beta = (np.sum(x2.T @ x2) / n - delta_sum) / (p * n)
    delta = (delta_sum - 2.0 * mu * np.trace(emp) + p * mu**2) / p
    shrinkage = 0.0 if beta == 0 else min(beta, delta) / delta
    return (1.0 - shrinkage) * emp + shrinkage * mu * np.eye(p)


def fit_reference(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, whitening matrix) of window embeddings [N, D]: standardise each dimension, shrink
    the covariance, whiten with its inverse square root."""
    mean = emb.mean(axis=0)
    std = np.maximum(emb.std(axis=0), STD_FLOOR)
    cov = ledoit_wolf((emb - mean) / std)
    vals, vecs = np.linalg.eigh(cov)
    inv_sqrt = vecs @ np.diag(1.0 / np.sqrt(np.maximum(vals, EIGEN_FLOOR))) @ vecs.T
    return mean, inv_sqrt / std[None, :]


def _distances(emb: np.ndarray, mean: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    z = (emb - mean) @ whiten.T
    return np.sqrt(np.sum(z * z, axis=1))


def check_scorer(scorer: str) -> str:
    """`scorer` if it is one of SCORERS, else EnrollmentError naming them."""
    if scorer not in SCORERS:
        raise EnrollmentError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    return scorer


def reference_distances(scorer: str, welds: Sequence[np.ndarray], emb: np.ndarray) -> np.ndarray:
    """Uncalibrated distances of the windows `emb` [T, D] to the reference fitted on `welds`
    (one embedding array per weld). k-NN runs the artifact's own module, so what is
    calibrated is what the artifact computes."""
    if check_scorer(scorer) == "knn":
        with torch.no_grad():
            return fit_knn(welds).distance(torch.from_numpy(emb).float()).double().numpy()
    return _distances(emb, *fit_reference(np.concatenate(list(welds))))


def _pooled_logits(
    dists: Sequence[np.ndarray],
    centre: float,
    scale: float,
    ratio: float,
    floor: Sequence[np.ndarray] | None,
) -> np.ndarray:
    """Logit of each weld's pooled p_defect for a calibration `centre` (and, fused, the
    supervised window logits the anomaly logits are maxed with)."""
    out = []
    for i, d in enumerate(dists):
        z = (d - centre) / scale
        if floor is not None:
            z = np.maximum(z, floor[i])
        p = float(topk_pool(torch.from_numpy(1.0 / (1.0 + np.exp(-z))), ratio))
        p = min(max(p, LOGIT_CLAMP), 1.0 - LOGIT_CLAMP)
        out.append(math.log(p / (1.0 - p)))
    return np.array(out)


@dataclass(frozen=True)
class Calibration:
    centre: float
    scale: float
    loo_logits: np.ndarray  # each good weld's pooled logit, scored without itself
    threshold: float

    def loo_false_alarm_rate(self) -> float:
        cut = math.log(self.threshold / (1.0 - self.threshold))
        return float(np.mean(self.loo_logits >= cut))


def calibrate(
    weld_embs: Sequence[np.ndarray],
    *,
    false_alarm_rate: float,
    threshold: float,
    ratio: float,
    supervised: Sequence[np.ndarray] | None = None,
    groups: Sequence[str] | None = None,
    scorer: str = "mahalanobis",
) -> Calibration:
    """Leave-one-out scores of the good welds, and the centre that puts `threshold` at the
    (1 - false_alarm_rate) quantile of their pooled logits: the larger of a fitted normal's
    and just above the observed one (at most floor(rate x n) welds reach it). With `groups`
    (each weld's config folder), a weld is scored without its whole group. `scorer` is the
    reference's kind (SCORERS)."""
    if len(weld_embs) < MIN_GOOD_WELDS:
        raise EnrollmentError(f"{len(weld_embs)} good weld(s); need at least {MIN_GOOD_WELDS}")
    keys = list(groups) if groups is not None else list(range(len(weld_embs)))
    loo = []
    for i in range(len(weld_embs)):
        rest = [e for j, e in enumerate(weld_embs) if keys[j] != keys[i]]
        loo.append(reference_distances(scorer, rest, weld_embs[i]))
    scale = max(float(np.std(np.concatenate(loo), ddof=1)), STD_FLOOR)
    target = math.log(threshold / (1.0 - threshold))
    quantile = NormalDist().inv_cdf(1.0 - false_alarm_rate)

    def excess(centre: float) -> float:
        logits = _pooled_logits(loo, centre, scale, ratio, supervised)
        modelled = float(logits.mean() + quantile * logits.std(ddof=1))
        # A pooled top-k score is max-like, with a heavier right tail than the normal: the
        # threshold also stays above all but floor(rate x n) leave-one-out scores (with
        # fewer than 1 / rate welds: above the highest one).
        allowed = math.floor(false_alarm_rate * len(logits))
        observed = float(np.sort(logits)[::-1][allowed]) + OBSERVED_MARGIN
        return max(modelled, observed) - target

    # excess() falls as the centre rises (every window logit falls): bisection.
    all_d = np.concatenate(loo)
    low, high = float(all_d.min()) - 50 * scale, float(all_d.max()) + 50 * scale
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if excess(mid) > 0 else (low, mid)
    centre = 0.5 * (low + high)
    return Calibration(
        centre, scale, _pooled_logits(loo, centre, scale, ratio, supervised), threshold
    )


def good_bags(
    data_root: Path, store: FeatureStore, folders: set[str] | None = None
) -> tuple[list[Bag], list[Bag]]:
    """(good weld bags, defect weld bags) under `data_root` (good ones only from `folders`)."""
    index = index_dataset(
        Path(data_root), sample_rate=store.frontend.sample_rate, chunk_samples=store.chunk_samples
    )
    bags = store.bags(index.entries, index.report)
    good = [
        b for b in bags if b.label == 0 and (folders is None or b.entry.config_folder in folders)
    ]
    return good, [b for b in bags if b.label == 1]


def loo_groups(bags: Sequence[Bag]) -> list[str] | None:
    """What calibration leaves out at a time: a whole config folder (a recording session)
    when the welds span two or more, else one weld. A new session differs from the enrolled
    ones more than a sibling weld does: on the shared recordings, welds of a never-enrolled
    session raised 2 false alarms in 15 at a 1 % leave-one-weld-out threshold, none at the
    leave-one-folder-out one (docs/training.md)."""
    folders = [b.entry.config_folder for b in bags]
    return folders if len(set(folders)) >= 2 else None


def embeddings(bags: Sequence[Bag], kind: str = DEFAULT_EMBEDDING) -> list[np.ndarray]:
    return [spectral_embedding(b.features, kind).numpy().astype(np.float64) for b in bags]


def supervised_logits(
    classifier: WindowClassifier, bags: Sequence[Bag], defect_idx: int
) -> list[np.ndarray]:
    with torch.no_grad():
        out = []
        for b in bags:
            logits = classifier.eval().classify_maps(b.features)
            out.append(
                (logits[:, defect_idx] - logits[:, 1 - defect_idx]).numpy().astype(np.float64)
            )
        return out


def reference_module(
    weld_embs: Sequence[np.ndarray], cal: Calibration, scorer: str = "mahalanobis"
) -> CellReference | KnnReference:
    """The calibrated reference of every weld in `weld_embs` (the artifact's module)."""
    if check_scorer(scorer) == "knn":
        return fit_knn(weld_embs, centre=cal.centre, scale=cal.scale)
    mean, whiten = fit_reference(np.concatenate(list(weld_embs)))
    return CellReference(torch.from_numpy(mean), torch.from_numpy(whiten), cal.centre, cal.scale)


def classifier_of(model: DeployModel) -> WindowClassifier:
    """The artifact's window classifier as a plain module (ours, or the original's layout)."""
    meta = model.metadata
    if meta.get("provenance", {}).get("kind") in ("enrolled", "fused", "taught"):
        raise EnrollmentError(f"{model.path}: already an enrolled artifact; enroll into its base")
    frontend = FrontEndParams(**meta["frontend"]) if "frontend" in meta else FrontEndParams()
    params = BackboneParams(**meta["model"]) if meta.get("model") else BackboneParams()
    classifier = WindowClassifier(frontend, params)
    # A scripted module's state dict also lists buffers its front end derives from the
    # others (the DFT bases, non-persistent in the plain module): take the persistent ones.
    wanted = classifier.state_dict()
    assert isinstance(model, TorchScriptModel)  # enroll loads its base with backend="torchscript"
    state = {k: v for k, v in model.module.base_model.state_dict().items() if k in wanted}
    try:
        classifier.load_state_dict(state)
    except RuntimeError as exc:
        raise EnrollmentError(
            f"{model.path}: its classifier does not fit this layout: {exc}"
        ) from exc
    return classifier.eval()


def enroll(
    data_root: Path,
    output: Path,
    *,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
    base: Path | None = None,
    segmentation: SegmentationSource = "auto",
    cache_dir: Path | None = None,
    embedding: str | None = None,
    scorer: str = DEFAULT_SCORER,
    name: str | None = None,
    version: str | None = None,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Build the enrolled artifact from the good welds under `data_root` (into `base`'s
    classifier when given); returns the export result. `scorer` is the good-only reference's
    kind (SCORERS), `embedding` its window embedding (default: the scorer's,
    SCORER_EMBEDDINGS). `name` / `version` are the model name and version events carry
    (default: the base's, if any)."""
    if not 0.0 < false_alarm_rate < 0.5:
        raise EnrollmentError(f"false-alarm rate must be in (0, 0.5), got {false_alarm_rate}")
    embedding = embedding or SCORER_EMBEDDINGS[check_scorer(scorer)]
    # TorchScript: the base's classifier is read from its scripted module.
    model = load_artifact(base, backend="torchscript") if base is not None else None
    classifier = classifier_of(model) if model is not None else None
    frontend = FrontEndParams(**model.metadata.get("frontend", {})) if model else FrontEndParams()
    chunk = model.chunk_samples if model else round(frontend.sample_rate * 1.0)
    ratio = model.eval_pool_ratio if model else DEFAULT_POOL_RATIO
    threshold = model.threshold if model else ANOMALY_THRESHOLD
    store = FeatureStore(frontend, chunk, cache_dir, segmentation)
    good, _ = good_bags(data_root, store)
    if not good:
        raise EnrollmentError(f"{data_root}: no usable good weld to enroll")
    embs = embeddings(good, embedding)
    sup = (
        supervised_logits(classifier, good, model.defect_idx)
        if classifier is not None and model is not None
        else None
    )
    taught = None
    if model is not None and classifier is not None and sup is not None:
        taught = _taught(model, sup, ratio, false_alarm_rate)
        threshold = taught.threshold
        log(f"threshold {threshold:.4f} taught from {taught.welds} good weld(s) (base's "
            f"{model.threshold:.4f})")  # fmt: skip
        if taught.warning:
            log(f"warning: {taught.warning}")
        if len(good) < MIN_GOOD_WELDS:
            return _export_taught(model, classifier, taught, output, ratio, frontend, good,
                                  data_root, segmentation, name, version)  # fmt: skip
    cal = calibrate(
        embs,
        false_alarm_rate=false_alarm_rate,
        threshold=threshold,
        ratio=ratio,
        supervised=sup,
        groups=loo_groups(good),
        scorer=scorer,
    )
    reference = reference_module(embs, cal, scorer)
    window_scorer = (
        FusedScorer(classifier, reference, model.defect_idx, embedding)
        if classifier is not None and model is not None
        else AnomalyScorer(frontend, reference, embedding)
    )
    folders = sorted({b.entry.config_folder for b in good})
    log(
        f"enrolled {len(good)} good weld(s) from {len(folders)} config folder(s) "
        f"({scorer} on {embedding}); "
        f"leave-one-out false-alarm rate {cal.loo_false_alarm_rate():.3f} "
        f"(requested {false_alarm_rate}, modelled as normal)"
    )
    provenance: dict[str, Any] = {
        "kind": "fused" if classifier else "enrolled",
        "scorer": scorer,
        "embedding": embedding,
        "data_root": str(Path(data_root).resolve()),
        "segmentation": segmentation,
        "enrolled_folders": folders,
        "enrolled_welds": len(good),
        "enrolled_windows": int(sum(len(e) for e in embs)),
        "false_alarm_rate": false_alarm_rate,
        "loo_false_alarm_rate": cal.loo_false_alarm_rate(),
        "calibration": {
            "centre": cal.centre,
            "scale": cal.scale,
            "left_out": "config folder" if loo_groups(good) else "weld",
        },
    }
    if taught is not None:
        provenance["teach_in"] = _teach_record(taught, model)
    if model is not None:
        provenance["base"] = {
            "path": str(base),
            "sha256": model.sha256,
            "provenance": model.metadata.get("provenance", {}),
        }
        # The base's training split stays visible to the overlap check of `evaluate`.
        if "split" in model.metadata.get("provenance", {}):
            provenance["split"] = model.metadata["provenance"]["split"]
    params = {
        "kind": provenance["kind"],
        "scorer": scorer,
        "embedding": embedding,
        "dims": int(embs[0].shape[1]),
    }
    if model is not None:
        params["base_model"] = dict(model.metadata.get("model", {}))
    result = export_artifact(
        window_scorer,
        Path(output),
        frontend=frontend,
        threshold=threshold,
        eval_pool_ratio=ratio,
        defect_idx=1,
        chunk_seconds=chunk / frontend.sample_rate,
        model_params=params,
        provenance=provenance,
        name=name if name is not None else (model.model_name if model else None),
        version=version if version is not None else (model.model_version if model else None),
    )
    load_artifact(result.path, expected_sha256=result.sha256, backend="torchscript").self_test()
    load_artifact(result.path, expected_sha256=result.sha256, backend="onnx").self_test()
    return result


def _taught(
    model: DeployModel, sup: Sequence[np.ndarray], ratio: float, false_alarm_rate: float
) -> TaughtThreshold:
    """The teach-in rule on the base's window probabilities of the good welds."""
    probs = [1.0 / (1.0 + np.exp(-logits)) for logits in sup]
    lower, upper = guards(model.threshold)
    return taught_threshold(probs, ratio, false_alarm_rate, lower, upper)


def _teach_record(taught: TaughtThreshold, model: DeployModel | None) -> dict[str, Any]:
    """What the artifact's provenance says about its taught threshold."""
    return {
        "rule": "deploy.teach_rule",
        "threshold": taught.threshold,
        "raw_threshold": taught.raw,
        "bounded": taught.bounded,
        "target_false_alarm": taught.target_false_alarm,
        "welds": taught.welds,
        "windows": taught.windows,
        "warning": taught.warning,
        "base_threshold": model.threshold if model is not None else None,
    }


def _export_taught(
    model: DeployModel,
    classifier: WindowClassifier,
    taught: TaughtThreshold,
    output: Path,
    ratio: float,
    frontend: FrontEndParams,
    good: Sequence[Bag],
    data_root: Path,
    segmentation: SegmentationSource,
    name: str | None,
    version: str | None,
) -> ExportResult:
    """The base's classifier alone with the taught threshold: a cell artifact from fewer
    good welds than a cell reference needs."""
    provenance: dict[str, Any] = {
        "kind": "taught",
        "data_root": str(Path(data_root).resolve()),
        "segmentation": segmentation,
        "enrolled_folders": sorted({b.entry.config_folder for b in good}),
        "enrolled_welds": len(good),
        "false_alarm_rate": taught.target_false_alarm,
        "teach_in": _teach_record(taught, model),
        "base": {
            "path": str(model.path),
            "sha256": model.sha256,
            "provenance": model.metadata.get("provenance", {}),
        },
    }
    if "split" in model.metadata.get("provenance", {}):
        provenance["split"] = model.metadata["provenance"]["split"]
    result = export_artifact(
        classifier,
        Path(output),
        frontend=frontend,
        threshold=taught.threshold,
        eval_pool_ratio=ratio,
        defect_idx=model.defect_idx,
        chunk_seconds=model.chunk_samples / frontend.sample_rate,
        model_params=dict(model.metadata.get("model", {})) or None,
        provenance=provenance,
        name=name if name is not None else model.model_name,
        version=version if version is not None else model.model_version,
    )
    load_artifact(result.path, expected_sha256=result.sha256, backend="torchscript").self_test()
    load_artifact(result.path, expected_sha256=result.sha256, backend="onnx").self_test()
    return result
