"""Read recordings for judging: any libsndfile format, any channel count, resampled with soxr
to the model's rate. Every failure becomes an AudioError that names the file and the reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from deploy.errors import AudioError

RESAMPLE_QUALITY = "HQ"  # soxr's high quality: transparent for 16-bit audio, fast enough offline


@dataclass(frozen=True)
class Recording:
    """Decoded audio: float32 [channels, samples] at `sample_rate`."""

    path: Path
    samples: np.ndarray
    sample_rate: int
    source_rate: int  # the file's own rate before resampling

    @property
    def resampled(self) -> bool:
        return self.sample_rate != self.source_rate

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate


def resample(frames: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """[N, C] float32 at source_rate -> [M, C] float32 at target_rate (whole-buffer soxr)."""
    if source_rate == target_rate:
        return frames
    return soxr.resample(frames, source_rate, target_rate, quality=RESAMPLE_QUALITY).astype(
        np.float32, copy=False
    )


def read_recording(path: str | Path, target_rate: int) -> Recording:
    """Decode `path` to float32 [C, N] at `target_rate`; refuse empty or non-finite audio."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    try:
        frames, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"{path}: unreadable or corrupt audio ({exc})") from exc
    except OSError as exc:
        raise AudioError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    if frames.shape[0] == 0:
        raise AudioError(f"{path}: empty (no audio frames)")
    n_bad = int(np.size(frames) - np.count_nonzero(np.isfinite(frames)))
    if n_bad:
        raise AudioError(f"{path}: {n_bad} NaN/Inf samples")
    frames = resample(frames, int(rate), target_rate)
    return Recording(path, np.ascontiguousarray(frames.T), target_rate, int(rate))
