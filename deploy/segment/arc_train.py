"""Training the arc segmenter's frame classifier from recordings whose arc current is logged.

Each recording's sensor log labels its frames: a frame is arc-on when its centre lies inside
the arc (the primary weld current over 5 A, first to last row, short dropouts bridged; the
log's clock moved onto the audio's by ``deploy.sensorlog.audio_clock_offset``). Frames within
``EDGE_IGNORE_S`` of an arc edge carry no weight: the log's rows are 0.1 s apart.

Every recording is heard as recorded and on a simulated factory floor (``deploy.segment.floor``:
gain, pink and white noise, grinder bursts, hum and a fan, a whine, hammer blows, another
setup's weld before, after or in the middle of it, a fading tail, a soft strike, a capture at
48 kHz), each with its own seeded draw; the neighbour's arc is labelled off. The classifier
(``arc_model``) is fitted by full-batch Adam on the cross-entropy, in float64 from a fixed
seed: the same data and seed give the same artifact.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.audio import AUDIO_SUFFIXES, read_recording, resample
from deploy.errors import WeldmonError
from deploy.segment.arc_features import FeatureConfig, recording_features
from deploy.segment.arc_model import ArcModel
from deploy.segment.floor import (
    arc_band_level_db,
    attenuated,
    gained,
    grinder_bursts,
    hum_and_fan,
    impact_bursts,
    padded_with_idle,
    pink_noise,
    ramped_in,
    whine,
    white_noise,
    with_neighbour,
)
from deploy.sensorlog import SensorLogError, arc_intervals, audio_clock_offset, read_sensor_log

EDGE_IGNORE_S = 0.1  # frames this close to an arc edge are not learnt from (log resolution)
HIDDEN = 12  # hidden units of the MLP
STEPS = 300  # Adam steps (full batch)
LEARNING_RATE = 0.02
L2 = 1e-4  # weight decay on the weights (not the biases)
SUBSAMPLE = 4  # every SUBSAMPLE-th frame is learnt from (neighbouring frames overlap)
PAD_S = 8.0  # own idle before and after a recording that gets a neighbour
IDLE_MARGIN_S = 1.5  # a recording's idle head ends this long before its arc


class TrainingDataError(WeldmonError):
    """Recordings that cannot be labelled or learnt from."""


@dataclass(frozen=True)
class LabelledRecording:
    """A recording at the model rate, its setup and its arc (s from its start)."""

    run_id: str
    setup: str
    samples: np.ndarray
    arc_s: tuple[float, float]


def find_recordings(root: Path) -> list[tuple[str, str, Path]]:
    """(run id, setup, audio path) of every recording under ``root`` that has a sensor log
    (a ``.csv`` of the same name) beside it. With a ``manifest.csv`` in ``root`` its rows are
    used (columns ``run_id``, ``config_folder``, ``flac``); otherwise every audio file, its
    setup being its folder's parent (one folder per run, one folder of runs per setup)."""
    root = Path(root)
    if not root.is_dir():
        raise TrainingDataError(f"{root}: no such folder")
    manifest = root / "manifest.csv"
    if manifest.is_file():
        try:
            with manifest.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            found = [(r["run_id"], r["config_folder"], root / r["flac"]) for r in rows]
        except (OSError, KeyError, csv.Error, UnicodeDecodeError) as exc:
            raise TrainingDataError(f"{manifest}: cannot read the manifest: {exc}") from exc
    else:
        audio = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        found = [(p.stem, p.parent.parent.name, p) for p in audio]
    found = [f for f in found if f[2].with_suffix(".csv").is_file()]
    if not found:
        raise TrainingDataError(f"{root}: no recording with a sensor log (.csv) beside it")
    return found


def load_labelled(root: Path, rate: int) -> list[LabelledRecording]:
    """Every recording under ``root`` (see `find_recordings`) with its arc from its log."""
    out = []
    for run_id, setup, path in find_recordings(root):
        mono = read_recording(path, rate).samples.mean(axis=0).astype(np.float32)
        try:
            log = read_sensor_log(path.with_suffix(".csv"))
            arcs = arc_intervals(log)
            if not arcs:
                raise TrainingDataError(f"{path}: its sensor log shows no arc")
            offset = audio_clock_offset(log, mono, rate)
        except SensorLogError as exc:
            raise TrainingDataError(str(exc)) from exc
        out.append(
            LabelledRecording(run_id, setup, mono, (arcs[0][0] + offset, arcs[-1][1] + offset))
        )
    return out


# -- the factory floor a recording is heard on ----------------------------------------------

Augment = Callable[
    [LabelledRecording, LabelledRecording, int, np.random.Generator],
    tuple[np.ndarray, tuple[float, float]],
]


def _noise(kind: str, low: float, high: float) -> Augment:
    def make(
        rec: LabelledRecording, _nb: LabelledRecording, rate: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, tuple[float, float]]:
        n, db = rec.samples.size, rng.uniform(low, high)
        noise = {
            "pink": lambda: pink_noise(n, rate, db, rng),
            "white": lambda: white_noise(n, db, rng),
            "grinder": lambda: grinder_bursts(n, rate, db, rng),
            "hum_fan": lambda: hum_and_fan(n, rate, db, rng),
            "whine": lambda: whine(n, rate, db, rng),
            "impacts": lambda: impact_bursts(n, rate, db, rng),
        }[kind]()
        return (rec.samples + noise).astype(np.float32), rec.arc_s

    return make


def _neighbour(mid_weld: bool) -> Augment:
    def make(
        rec: LabelledRecording, nb: LabelledRecording, rate: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, tuple[float, float]]:
        own = padded_with_idle(rec.samples, rate, rec.arc_s[0] - IDLE_MARGIN_S, PAD_S)
        other = padded_with_idle(nb.samples, rate, nb.arc_s[0] - IDLE_MARGIN_S, PAD_S)
        if mid_weld:
            shift = (rec.arc_s[0] + rec.arc_s[1]) / 2.0 - nb.arc_s[0]
        else:
            shift = rec.arc_s[0] - nb.arc_s[0] + rng.choice((-1.0, 1.0)) * rng.uniform(2.0, 6.0)
        mixed = with_neighbour(
            own,
            other,
            rate,
            rng.uniform(-15.0, -6.0),
            shift,
            arc_band_level_db(rec.samples, rate, rec.arc_s),
            arc_band_level_db(nb.samples, rate, nb.arc_s),
        )
        return mixed, (rec.arc_s[0] + PAD_S, rec.arc_s[1] + PAD_S)

    return make


def _fading_tail(
    rec: LabelledRecording, _nb: LabelledRecording, rate: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float]]:
    tail = rng.uniform(2.0, 6.0)
    span = (rec.arc_s[1] - tail, rec.arc_s[1] + 0.5)
    return attenuated(rec.samples, rate, span, rng.uniform(6.0, 14.0)), rec.arc_s


def _soft_strike(
    rec: LabelledRecording, _nb: LabelledRecording, rate: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float]]:
    x = ramped_in(rec.samples, rate, rec.arc_s[0], rng.uniform(0.5, 1.5), rng.uniform(-25, -10))
    return x, rec.arc_s


AUGMENTATIONS: dict[str, Augment] = {
    "as recorded": lambda rec, _nb, _rate, _rng: (rec.samples, rec.arc_s),
    "gain -20 dB": lambda rec, _nb, _rate, _rng: (gained(rec.samples, -20.0), rec.arc_s),
    "gain +6 dB": lambda rec, _nb, _rate, _rng: (gained(rec.samples, 6.0), rec.arc_s),
    "capture 48 kHz": lambda rec, _nb, rate, _rng: (
        resample(resample(rec.samples[:, None], rate, 48_000), 48_000, rate)[:, 0],
        rec.arc_s,
    ),
    "pink": _noise("pink", -62.0, -42.0),
    "white": _noise("white", -65.0, -48.0),
    "grinder": _noise("grinder", -55.0, -40.0),
    "hum + fan": _noise("hum_fan", -40.0, -25.0),
    "whine": _noise("whine", -60.0, -45.0),
    "impacts": _noise("impacts", -30.0, -15.0),
    "neighbour": _neighbour(mid_weld=False),
    "neighbour mid-weld": _neighbour(mid_weld=True),
    "fading tail": _fading_tail,
    "soft strike": _soft_strike,
}
NEEDS_NEIGHBOUR = frozenset({"neighbour", "neighbour mid-weld"})


def frame_labels(
    starts: np.ndarray, config: FeatureConfig, arc_s: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """(label, weight) per frame: on inside the arc; no weight near its edges."""
    centre = (starts + config.frame_len / 2.0) / config.sample_rate
    label = (centre >= arc_s[0]) & (centre < arc_s[1])
    near = (np.abs(centre - arc_s[0]) < EDGE_IGNORE_S) | (np.abs(centre - arc_s[1]) < EDGE_IGNORE_S)
    return label.astype(np.float64), (~near).astype(np.float64)


def neighbour_of(rec: LabelledRecording, pool: Sequence[LabelledRecording]) -> LabelledRecording:
    """A recording of another setup in ``pool`` (the next setup by name, cyclic) whose arc is
    long enough to outlast ``rec``'s from its middle where there is one."""
    setups = sorted({r.setup for r in pool} - {rec.setup})
    if not setups:
        raise TrainingDataError("a neighbour needs recordings of at least two setups")
    after = [s for s in setups if s > rec.setup] + [s for s in setups if s < rec.setup]
    candidates = [r for s in after for r in pool if r.setup == s]
    need = (rec.arc_s[1] - rec.arc_s[0]) / 2.0 + 1.0
    long = [r for r in candidates if r.arc_s[1] - r.arc_s[0] > need]
    return (long or candidates)[zlib.crc32(rec.run_id.encode()) % len(long or candidates)]


def examples(
    rec: LabelledRecording,
    pool: Sequence[LabelledRecording],
    config: FeatureConfig,
    seed: int,
    names: Sequence[str] = tuple(AUGMENTATIONS),
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(feature rows, labels, weights) of ``rec`` under each augmentation in ``names``; a
    neighbour comes from another setup of ``pool``."""
    out = {}
    for name in names:
        rng = np.random.default_rng(
            [seed, zlib.crc32(rec.run_id.encode()), zlib.crc32(name.encode())]
        )
        nb = neighbour_of(rec, pool) if name in NEEDS_NEIGHBOUR else rec
        x, arc = AUGMENTATIONS[name](rec, nb, config.sample_rate, rng)
        rows, starts = recording_features(x, config)
        label, weight = frame_labels(starts, config, arc)
        out[name] = (rows, label, weight)
    return out


def fit(
    rows: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    config: FeatureConfig,
    seed: int,
    trained: dict[str, object] | None = None,
) -> ArcModel:
    """The MLP fitted to feature ``rows`` and their ``labels`` (0/1), each frame weighted."""
    if rows.shape[0] == 0 or weights.sum() <= 0:
        raise TrainingDataError("no labelled frames to learn from")
    if labels[weights > 0].min() == labels[weights > 0].max():
        raise TrainingDataError("the frames are all arc-on or all arc-off: nothing to learn")
    x, y = rows[::SUBSAMPLE], labels[::SUBSAMPLE]
    w = weights[::SUBSAMPLE] / weights[::SUBSAMPLE].sum()
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), 1e-3)
    z = (x - mean) / scale
    rng = np.random.default_rng(seed)
    d = z.shape[1]
    params = [
        rng.standard_normal((d, HIDDEN)) / np.sqrt(d),
        np.zeros(HIDDEN),
        rng.standard_normal(HIDDEN) / np.sqrt(HIDDEN),
        np.zeros(1),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1_, b2_, eps = 0.9, 0.999, 1e-8
    for step in range(1, STEPS + 1):
        w1, b1, w2, b2 = params
        h = np.tanh(z @ w1 + b1)
        p = 1.0 / (1.0 + np.exp(-np.clip(h @ w2 + b2[0], -40.0, 40.0)))
        g_logit = w * (p - y)  # d(weighted mean cross-entropy)/d(logit)
        g_w2 = h.T @ g_logit + L2 * w2
        g_b2 = np.array([g_logit.sum()])
        g_h = np.outer(g_logit, w2) * (1.0 - h * h)
        g_w1 = z.T @ g_h + L2 * w1
        g_b1 = g_h.sum(axis=0)
        for i, g in enumerate((g_w1, g_b1, g_w2, g_b2)):
            m[i] = b1_ * m[i] + (1 - b1_) * g
            v[i] = b2_ * v[i] + (1 - b2_) * g * g
            mh = m[i] / (1 - b1_**step)
            vh = v[i] / (1 - b2_**step)
            params[i] = params[i] - LEARNING_RATE * mh / (np.sqrt(vh) + eps)
    w1, b1, w2, b2 = params
    return ArcModel(config, mean, scale, w1, b1, w2, float(b2[0]), dict(trained or {}))


def train(
    recordings: Sequence[LabelledRecording],
    config: FeatureConfig,
    seed: int = 0,
    trained: dict[str, object] | None = None,
) -> ArcModel:
    """The classifier trained on ``recordings`` (at least two setups), each heard under every
    augmentation."""
    parts = [
        part for rec in recordings for part in examples(rec, recordings, config, seed).values()
    ]
    rows = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    weights = np.concatenate([p[2] for p in parts])
    return fit(rows, labels, weights, config, seed, trained)
