"""A weld clip's spectrogram as a PNG, rendered on the server.

matplotlib (the Agg canvas and ``mlab.specgram``, no pyplot and no GUI) draws labelled
axes and a dB colour bar that a welding engineer can read without a legend, and it is the
library the training reports already use. Rendering holds a lock: matplotlib's global font
and colormap caches are not documented as thread-safe.
"""

from __future__ import annotations

import functools
import io
import threading
from pathlib import Path

import numpy as np
import soundfile as sf
from matplotlib import mlab
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monitor.ops.clips import ClipError

NFFT = 512  # 32 ms at 16 kHz: resolves the arc's crackle, ~31 Hz bins
OVERLAP = 384  # 75 % for clips up to ~10 s: smooth in time without blurring short bursts
# Columns computed at most: the image is ~800 px wide, so a long weld takes a longer hop
# instead of computing (and holding) columns nobody can see.
MAX_COLUMNS = 1200
DYNAMIC_RANGE_DB = 80.0  # below the loudest bin; keeps the idle noise floor visible
FIGSIZE_IN = (9.0, 3.0)
DPI = 100
CACHE_SIZE = 32  # rendered images kept (about 60 KB each)
MAX_SECONDS = 600.0  # longer clips are drawn from their first 10 minutes

_lock = threading.Lock()


def spectrogram_png(path: Path) -> bytes:
    """PNG bytes of the clip's spectrogram; cached per file version. Raises ClipError."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ClipError(f"{path}: cannot read the clip: {exc.strerror or exc}") from exc
    return _render(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _render(path: Path, mtime_ns: int, size: int) -> bytes:
    del mtime_ns, size  # cache key only: a rewritten file renders again
    try:
        info = sf.info(str(path))
        frames = min(info.frames, int(MAX_SECONDS * info.samplerate))
        samples, rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ClipError(f"{path}: not a readable audio file: {exc}") from exc
    mono = samples.mean(axis=1)
    del samples
    if mono.size < NFFT:
        mono = np.pad(mono, (0, NFFT - mono.size))
    hop = max(NFFT - OVERLAP, -(-mono.size // MAX_COLUMNS))
    with _lock:
        power, freqs, times = mlab.specgram(mono, NFFT=NFFT, Fs=rate, noverlap=max(NFFT - hop, 0))
        db = (10.0 * np.log10(np.maximum(power, 1e-20))).astype(np.float32)
        del power
        top = float(db.max())
        fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        image = ax.imshow(
            db,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - DYNAMIC_RANGE_DB,
            vmax=top,
            extent=(0.0, float(times[-1] + NFFT / rate / 2), 0.0, float(freqs[-1]) / 1000.0),
        )
        ax.set_xlabel("time in the weld (s)")
        ax.set_ylabel("frequency (kHz)")
        fig.colorbar(image, ax=ax, label="dB")
        out = io.BytesIO()
        fig.savefig(out, format="png")
    return out.getvalue()
