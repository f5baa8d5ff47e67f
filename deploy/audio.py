"""Read recordings for judging: any libsndfile format, any channel count, resampled with soxr
to the model's rate. Every failure becomes an AudioError that names the file and the reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from deploy.errors import AudioError

RESAMPLE_QUALITY = "HQ"  # soxr's high quality: transparent for 16-bit audio, fast enough offline
# A recording is decoded whole, as float32 (4 bytes a sample), and resampled into a copy, so
# its length is checked from the header first: 2**26 samples (frames x channels, 256 MiB
# decoded) is 70 min of 16 kHz mono or 23 min of 48 kHz mono; the welds recorded here last
# under a minute. Longer audio (a whole shift): `weldmon replay`, which streams it.
MAX_DECODED_SAMPLES = 2**26


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
        return float(self.samples.shape[1] / self.sample_rate)


def resample(frames: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """[N, C] float32 at source_rate -> [M, C] float32 at target_rate (whole-buffer soxr)."""
    if source_rate == target_rate:
        return frames
    out: np.ndarray = soxr.resample(
        frames, source_rate, target_rate, quality=RESAMPLE_QUALITY
    ).astype(np.float32, copy=False)
    return out


# What a folder named on a command line is searched for (libsndfile's common formats); a file
# named explicitly is tried whatever its name, so a non-audio file gets an error of its own.
AUDIO_SUFFIXES = frozenset(
    {".flac", ".wav", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}
)


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders replaced by the audio files under them (sorted, recursive). A
    folder holding none stays in the list, so the command reports it instead of skipping it."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
            out.extend(found or [path])
        else:
            out.append(path)
    return out


def no_audio_in_folder(path: Path) -> str:
    """The message for a folder `expand_inputs` found no audio in."""
    return f"{path}: a folder with no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in it"


def libsndfile_reason(exc: Exception) -> str:
    """Why libsndfile refused a file, in words a user can act on: its 'Format not recognised'
    comes with advice about pipes, which is about its API, not about the file."""
    error = getattr(exc, "error_string", None) or str(exc)
    if "not recognised" in error or "possibly a pipe" in error:
        return "unreadable, not an audio format libsndfile knows"
    return f"unreadable or not audio ({error})"


def check_readable(path: Path) -> None:
    """Open and read a byte the way Python does, so that a refusal gets the system's words
    ("Permission denied"); libsndfile reports every such failure as "System error."."""
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise AudioError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def read_recording(
    path: str | Path, target_rate: int, max_samples: int = MAX_DECODED_SAMPLES
) -> Recording:
    """Decode `path` to float32 [C, N] at `target_rate`; refuse empty or non-finite audio,
    and audio longer than `max_samples` (frames x channels) before decoding any of it."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(no_audio_in_folder(path))
    check_readable(path)
    try:
        with sf.SoundFile(str(path)) as audio:
            samples, rate = audio.frames * audio.channels, audio.samplerate
            if samples > max_samples:
                raise AudioError(
                    f"{path}: {audio.frames / rate:.0f} s of {audio.channels}-channel audio "
                    f"({samples} samples) is more than the {max_samples} read at once; split "
                    "it, or stream it with `weldmon replay`"
                )
            frames = audio.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"{path}: {libsndfile_reason(exc)}") from exc
    except OSError as exc:
        raise AudioError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    if frames.shape[0] == 0:
        raise AudioError(f"{path}: empty (no audio frames)")
    n_bad = int(np.size(frames) - np.count_nonzero(np.isfinite(frames)))
    if n_bad:
        raise AudioError(f"{path}: {n_bad} NaN/Inf samples")
    frames = resample(frames, int(rate), target_rate)
    return Recording(path, np.ascontiguousarray(frames.T), target_rate, int(rate))
