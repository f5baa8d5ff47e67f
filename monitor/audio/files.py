"""Recorded files as an audio source: the replay side of the capture seam.

`FileSource.open(path)` decodes a file block by block (libsndfile via soundfile) into the same
`AudioBlock`s the sound device produces, so replay runs the daemon's pipeline unchanged. Each
file is its own stream epoch (frames restart at 0); frame 0 is mapped to the wall clock when
the file is opened. NaN/Inf samples are replaced by 0 and counted on the block, as capture
does. Any failure to open or decode becomes an `AudioError` naming the file and the reason.
`Pacer` slows replay to real time (`--realtime`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import soundfile as sf

from deploy.audio import check_readable, libsndfile_reason, no_audio_in_folder
from deploy.errors import AudioError
from monitor.audio.blocks import AudioBlock, sanitize_nonfinite

DEFAULT_FILE_BLOCK_S = 0.1  # same order as the capture block, so replay cuts audio like run


class FileStream:
    """One open file: its format and its blocks. Use as a context manager."""

    def __init__(self, path: Path, block_s: float, epoch: int, epoch_utc: float) -> None:
        self.path = path
        self.epoch = epoch
        self.epoch_utc = epoch_utc
        if path.is_dir():
            raise AudioError(no_audio_in_folder(path))
        if not path.exists():
            raise AudioError(f"{path}: no such file")
        check_readable(path)  # "Permission denied", not libsndfile's "System error."
        try:
            self._file = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise AudioError(f"{path}: {libsndfile_reason(exc)}") from exc
        except OSError as exc:
            raise AudioError(f"{path}: cannot open ({exc.strerror or exc})") from exc
        self.sample_rate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.frames = int(self._file.frames)
        if self.frames <= 0:
            self._file.close()
            raise AudioError(f"{path}: empty (no audio frames)")
        self._block_frames = max(1, round(block_s * self.sample_rate))

    def blocks(self) -> Iterator[AudioBlock]:
        """The file's blocks in order; raises AudioError if decoding fails part-way."""
        start = 0
        while True:
            try:
                data = self._file.read(self._block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(
                    f"{self.path}: decoding failed after {start / self.sample_rate:.2f} s "
                    f"(truncated or corrupt: {exc})"
                ) from exc
            if data.shape[0] == 0:
                if start == 0:
                    raise AudioError(f"{self.path}: empty (no audio frames)")
                return
            samples, bad = sanitize_nonfinite(np.ascontiguousarray(data, dtype=np.float32))
            yield AudioBlock(
                samples=samples,
                start_frame=start,
                sample_rate=self.sample_rate,
                stream_epoch=self.epoch,
                epoch_utc=self.epoch_utc,
                nonfinite_samples=bad,
            )
            start += samples.shape[0]

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FileSource:
    """Opens files one after another, each as a new stream epoch."""

    def __init__(
        self, block_s: float = DEFAULT_FILE_BLOCK_S, clock: Callable[[], float] = time.time
    ) -> None:
        self.block_s = block_s
        self._clock = clock
        self._epoch = 0

    def open(self, path: str | Path) -> FileStream:
        """Open `path` as the next epoch; raises AudioError."""
        self._epoch += 1
        return FileStream(Path(path), self.block_s, self._epoch, self._clock())


class Pacer:
    """Holds replay to real time: `wait(seconds_of_audio)` returns when that much wall time
    has passed since `start()`."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._t0 = time.monotonic()

    def start(self) -> None:
        """Restart the reference (at the start of each file)."""
        self._t0 = time.monotonic()

    async def wait(self, audio_s: float) -> None:
        """Sleep until `audio_s` seconds of wall time have passed since `start` (if enabled)."""
        if self.enabled:
            delay = self._t0 + audio_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
