"""A weld clip's spectrogram as a small thumbnail for list rows, without matplotlib.

The overview's cards and the history list show one per clipped weld, so it must be cheap and
must not hold up the live updates: importing matplotlib (what the full spectrogram uses)
takes about a second on a busy host and was measured delaying a live update by that much.
Here numpy frames the audio and takes the FFT of 240 frames, and Pillow scales the image;
the colours follow matplotlib's ``magma`` (the full spectrogram's) through a few stops.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from deploy.dataset_layout import ClipError

THUMB_PX = (120, 32)  # width, height of a list row's thumbnail
COLUMNS = 240  # spectrogram columns computed (2 per pixel)
NFFT = 512  # as the full spectrogram: 32 ms at 16 kHz
DYNAMIC_RANGE_DB = 80.0  # as the full spectrogram
MAX_SECONDS = 600.0  # as the full spectrogram
CACHE_SIZE = 256  # thumbnails kept (a few KB each): a history page and every card
# magma at 0, 0.25, 0.5, 0.75, 1 (RGB 0-255): dark purple -> red -> orange -> pale yellow
MAGMA_STOPS = np.array(
    [[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], dtype=np.float64
)


def thumbnail_png(path: Path) -> bytes:
    """PNG bytes of the clip's thumbnail (``THUMB_PX``, no axes); cached per file version.
    Raises ClipError."""
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
        samples, _ = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ClipError(f"{path}: not a readable audio file: {exc}") from exc
    mono = samples.mean(axis=1)
    if mono.size < NFFT:
        mono = np.pad(mono, (0, NFFT - mono.size))
    starts = np.linspace(0, mono.size - NFFT, COLUMNS).astype(np.int64)
    frames_ = mono[starts[:, None] + np.arange(NFFT)] * np.hanning(NFFT)
    power = np.abs(np.fft.rfft(frames_, axis=1)) ** 2
    db = 10.0 * np.log10(np.maximum(power, 1e-20))
    level = np.clip((db - (db.max() - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB, 0.0, 1.0)
    rgb = _magma(level.T[::-1])  # frequency up, low frequencies at the bottom
    image = Image.fromarray(rgb).resize(THUMB_PX, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _magma(level: np.ndarray) -> np.ndarray:
    """Levels in [0, 1] -> uint8 RGB along the magma stops."""
    x = np.linspace(0.0, 1.0, len(MAGMA_STOPS))
    channels = [np.interp(level, x, MAGMA_STOPS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.uint8)
