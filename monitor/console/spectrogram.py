"""A weld clip's spectrogram as a PNG, rendered on the server, with the weld's window
scores above it on the same time axis.

The clip is the weld (the daemon cuts it from the weld's start to its end), so 0 s is the
weld's start and the clip's end its end; both are marked, with every window's p_defect and
the threshold drawn over the seconds each window judged. matplotlib (the Agg canvas and
``mlab.specgram``, no pyplot and no GUI) draws labelled axes and a dB colour bar that a
welding engineer can read without a legend, and it is the library the training reports
already use. Rendering holds a lock: matplotlib's global font and colormap caches are not
documented as thread-safe.
"""

from __future__ import annotations

import functools
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from matplotlib import mlab
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deploy.dataset_layout import ClipError

NFFT = 512  # 32 ms at 16 kHz: resolves the arc's crackle, ~31 Hz bins
OVERLAP = 384  # 75 % for clips up to ~10 s: smooth in time without blurring short bursts
# Columns computed at most: the image is ~800 px wide, so a long weld takes a longer hop
# instead of computing (and holding) columns nobody can see.
MAX_COLUMNS = 1200
DYNAMIC_RANGE_DB = 80.0  # below the loudest bin; keeps the idle noise floor visible
FIGSIZE_IN = (9.0, 3.0)  # spectrogram only
FIGSIZE_SCORED_IN = (9.0, 4.2)  # with the window scores above it
SCORE_ROWS = (1, 2.4)  # height ratio: scores, spectrogram
DPI = 100
CACHE_SIZE = 32  # rendered images kept (about 60 KB each)
MAX_SECONDS = 600.0  # longer clips are drawn from their first 10 minutes

_lock = threading.Lock()


@dataclass(frozen=True)
class WindowScores:
    """What the weld's verdict rests on, drawn above the spectrogram: each window's p_defect
    (window i judged seconds i*window_s to (i+1)*window_s of the weld) and the threshold."""

    probs: tuple[float, ...]
    window_s: float
    threshold: float


def spectrogram_png(path: Path, scores: WindowScores | None = None) -> bytes:
    """PNG bytes of the clip's spectrogram (with `scores` above it on the same time axis);
    cached per file version. Raises ClipError."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ClipError(f"{path}: cannot read the clip: {exc.strerror or exc}") from exc
    return _render(path, stat.st_mtime_ns, stat.st_size, scores)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _render(path: Path, mtime_ns: int, size: int, scores: WindowScores | None) -> bytes:
    del mtime_ns, size  # cache key only: a rewritten file renders again
    mono, rate = _read_mono(path)
    hop = max(NFFT - OVERLAP, -(-mono.size // MAX_COLUMNS))
    with _lock:
        power, freqs, times = mlab.specgram(mono, NFFT=NFFT, Fs=rate, noverlap=max(NFFT - hop, 0))
        db = (10.0 * np.log10(np.maximum(power, 1e-20))).astype(np.float32)
        del power
        top = float(db.max())
        end_s = mono.size / rate
        fig = Figure(
            figsize=FIGSIZE_IN if scores is None else FIGSIZE_SCORED_IN,
            dpi=DPI,
            layout="constrained",
        )
        FigureCanvasAgg(fig)
        if scores is None:
            ax = fig.add_subplot()
        else:
            top_ax, ax = fig.subplots(2, 1, sharex=True, height_ratios=SCORE_ROWS)
            _draw_scores(top_ax, scores, end_s)
        image = ax.imshow(
            db,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - DYNAMIC_RANGE_DB,
            vmax=top,
            extent=(
                0.0,
                float(np.asarray(times)[-1] + NFFT / rate / 2),
                0.0,
                float(np.asarray(freqs)[-1]) / 1000.0,
            ),
        )
        ax.set_xlabel("time in the weld (s)")
        ax.set_ylabel("frequency (kHz)")
        if scores is not None:
            _mark_weld(ax, end_s)
            ax.set_xlim(0.0, end_s)  # shared with the scores: bars end at the weld's end
        fig.colorbar(image, ax=ax, label="dB")
        out = io.BytesIO()
        fig.savefig(out, format="png")
    return out.getvalue()


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    try:
        info = sf.info(str(path))
        frames = min(info.frames, int(MAX_SECONDS * info.samplerate))
        samples, rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ClipError(f"{path}: not a readable audio file: {exc}") from exc
    mono = samples.mean(axis=1)
    if mono.size < NFFT:
        mono = np.pad(mono, (0, NFFT - mono.size))
    return mono, int(rate)


def _draw_scores(ax, scores: WindowScores, end_s: float) -> None:  # ax: matplotlib Axes
    starts = np.arange(len(scores.probs)) * scores.window_s
    probs = np.asarray(scores.probs)
    over = probs >= scores.threshold
    colours = np.where(over, "#c0392b", "#7f8c8d")
    ax.bar(starts, probs, width=scores.window_s * 0.9, align="edge", color=colours)
    ax.axhline(scores.threshold, color="#2c3e50", linestyle="--", linewidth=1)
    ax.text(
        0.995,
        scores.threshold,
        f"threshold {scores.threshold:.3f}",
        transform=ax.get_yaxis_transform(),
        ha="right",
        va="bottom",
        fontsize=8,
    )
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("p_defect")
    ax.set_title("each window's p_defect (red: at or above the threshold)", fontsize=9)
    _mark_weld(ax, end_s)


def _mark_weld(ax, end_s: float) -> None:  # ax: matplotlib Axes
    for x in (0.0, end_s):  # the weld's start and end (the clip is the weld)
        ax.axvline(x, color="#2980b9", linewidth=1.5)
