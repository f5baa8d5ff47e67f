"""Decode each recording once and keep its welds' log-mel frames: the training data path.

A recording is read once (`deploy.audio.read_recording`), mixed to mono (`deploy.windows`),
and its welds found (`training.welds`: the sensor log's arc current, the daemon's default
segmenter, or the whole file). For each weld the artifact's own front end
(`deploy.frontend.LogMel.power_db`) turns the weld's audio [start, end) into mel frames in
dB, one every hop from the weld's start. A window of the weld is then a slice of those
frames: window i (samples start + i*chunk ...) is frames [i*stride, i*stride + frames), with
stride = chunk / hop, because its STFT frames are exactly those of the whole weld. The
windows are the daemon's (aligned at the weld start, whole windows only), normalised as the
artifact does (`deploy.frontend.normalise_windows`), and training can also cut them at other
grid offsets or alter the frames (`training.augment`) without decoding again.

Features are keyed by the file's content hash, the sensor log's, the segmentation and the
front-end parameters: an edited file or a changed front end never reuses stale frames. With a
cache folder they persist across runs (cv folds and sweeps share one store in memory anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deploy.audio import read_recording
from deploy.errors import AudioError
from deploy.frontend import FrontEndParams, LogMel, normalise_windows
from deploy.windows import mix_channels, window_count
from training.dataset import DataReport, RunEntry
from training.welds import (
    SegmentationSource,
    Weld,
    WeldSegmentationError,
    find_welds,
    sensor_log_path,
)

HASH_BLOCK_BYTES = 1 << 20  # read size while hashing file content
CACHE_FORMAT = 2  # bump when the cached arrays change meaning


@dataclass(frozen=True)
class Bag:
    """One weld as a MIL bag: its dB frames, its windows' normalised maps and its labels."""

    entry: RunEntry
    weld: Weld
    frames: Tensor  # float32 [n_mels, n_frames] dB mel frames of [start, end), from start
    features: Tensor  # float32 [n_windows, 1, n_mels, frames]: the daemon's windows
    weld_index: int = 0  # 0, 1, ... within the recording

    @property
    def label(self) -> int:
        return self.entry.binary_label

    @property
    def n_windows(self) -> int:
        return int(self.features.shape[0])

    @property
    def key(self) -> str:
        """Unique name of the weld: run id, and its index when a recording has several."""
        run = self.entry.run_id
        return run if self.weld_index == 0 else f"{run}#{self.weld_index}"


def content_hash(path: Path) -> str:
    digest = hashlib.sha1()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def frontend_key(frontend: FrontEndParams, chunk_samples: int, segmentation: str = "file") -> str:
    blob = json.dumps(
        {
            **frontend.as_dict(),
            "chunk_samples": chunk_samples,
            "segmentation": segmentation,
            "format": CACHE_FORMAT,
        },
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def window_stride(frontend: FrontEndParams, chunk_samples: int) -> int:
    """Frames from one window's start to the next (chunk / hop; must divide exactly)."""
    if chunk_samples % frontend.hop_length:
        raise ValueError(
            f"chunk_samples ({chunk_samples}) must be a multiple of hop_length "
            f"({frontend.hop_length}) to slice windows from a weld's frames"
        )
    return chunk_samples // frontend.hop_length


def slice_windows(
    frames: Tensor, stride: int, per_window: int, n_windows: int, offset: int = 0
) -> Tensor:
    """dB frames [M, F] -> windows [T, M, per_window] starting every `stride` frames from
    `offset`, at most `n_windows` of them (the whole windows of the audio: the last STFT
    frame ends before a window's last samples, so frames alone would count one too many)."""
    usable = frames.shape[1] - offset
    n = 0 if usable < per_window else min(n_windows, (usable - per_window) // stride + 1)
    if n <= 0:
        return frames.new_zeros((0, frames.shape[0], per_window))
    return frames[:, offset:].unfold(1, per_window, stride)[:, :n].permute(1, 0, 2)


@torch.inference_mode()
def weld_frames(mono: np.ndarray, weld: Weld, logmel: LogMel) -> Tensor:
    """dB mel frames [M, F] of the weld's audio, one every hop from its start."""
    x = torch.from_numpy(np.ascontiguousarray(mono[weld.start : weld.end]))
    if x.numel() < logmel.n_fft:
        return torch.zeros((logmel.fb.shape[1], 0))
    return logmel.power_db(x.unsqueeze(0))[0].clone()  # clone: leave inference mode


class FeatureStore:
    """Content-keyed weld frames; one decode per file per process (or per cache folder)."""

    def __init__(
        self,
        frontend: FrontEndParams,
        chunk_samples: int,
        cache_dir: Path | None = None,
        segmentation: SegmentationSource = "file",
    ) -> None:
        self.frontend = frontend
        self.chunk_samples = chunk_samples
        self.segmentation = segmentation
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.key = frontend_key(frontend, chunk_samples, segmentation)
        self.stride = window_stride(frontend, chunk_samples)
        self.per_window = frontend.n_frames(chunk_samples)
        self._logmel = LogMel(frontend).eval()
        self._memory: dict[str, list[tuple[Weld, Tensor]]] = {}
        self.decodes = 0  # files decoded by this store (a test and the benchmark read it)

    @property
    def filterbank(self) -> Tensor:
        """The front end's mel filters [n_freqs, n_mels] (augmentation shapes noise with it)."""
        return self._logmel.fb

    def _digest(self, entry: RunEntry) -> str:
        try:
            digest = content_hash(entry.path)
            log = sensor_log_path(entry.path)
            if self.segmentation in ("auto", "current") and log.is_file():
                digest += "-" + content_hash(log)[:12]
        except OSError as exc:
            raise AudioError(f"{entry.path}: cannot read ({exc.strerror or exc})") from exc
        return digest

    def _disk_path(self, digest: str) -> Path | None:
        return self.cache_dir / f"{digest}-{self.key}.npz" if self.cache_dir else None

    def _decode(self, entry: RunEntry) -> list[tuple[Weld, Tensor]]:
        rec = read_recording(entry.path, self.frontend.sample_rate)
        self.decodes += 1
        mono = mix_channels(torch.from_numpy(rec.samples)).numpy()
        try:
            welds = find_welds(entry.path, mono, self.frontend.sample_rate, self.segmentation)
        except WeldSegmentationError as exc:
            raise AudioError(str(exc)) from exc
        return [(w, weld_frames(mono, w, self._logmel)) for w in welds]

    def welds(self, entry: RunEntry) -> list[tuple[Weld, Tensor]]:
        """(weld, dB frames) of every weld of a recording; raises AudioError if it cannot be
        decoded or segmented."""
        digest = self._digest(entry)
        if digest in self._memory:
            return self._memory[digest]
        disk = self._disk_path(digest)
        if disk is not None and disk.is_file():
            with np.load(disk) as z:
                found = [
                    (Weld(int(a), int(b), str(s), str(n)), torch.from_numpy(z[f"frames_{i}"]))
                    for i, (a, b, s, n) in enumerate(
                        zip(z["starts"], z["ends"], z["sources"], z["notes"], strict=True)
                    )
                ]
        else:
            found = self._decode(entry)
            if disk is not None:
                disk.parent.mkdir(parents=True, exist_ok=True)
                tmp = disk.with_name(f"{disk.name}.{os.getpid()}.tmp")
                # Typed Any: numpy's stub would match these names against savez's allow_pickle.
                frame_arrays: dict[str, Any] = {
                    f"frames_{i}": f.numpy() for i, (_, f) in enumerate(found)
                }
                with tmp.open("wb") as fh:
                    np.savez(
                        fh,
                        starts=np.array([w.start for w, _ in found], dtype=np.int64),
                        ends=np.array([w.end for w, _ in found], dtype=np.int64),
                        sources=np.array([w.source for w, _ in found]),
                        notes=np.array([w.note for w, _ in found]),
                        **frame_arrays,
                    )
                tmp.replace(disk)  # atomic: concurrent runs never read half a file
        self._memory[digest] = found
        return found

    def windows(self, frames: Tensor, n_samples: int, offset: int = 0) -> Tensor:
        """A weld's dB frames (of `n_samples` of audio) -> the normalised maps [T, 1, M, F]
        of its whole windows cut from frame `offset` (0: the daemon's grid, at the start)."""
        n = window_count(n_samples - offset * self.frontend.hop_length, self.chunk_samples)
        db = slice_windows(frames, self.stride, self.per_window, n, offset)
        return normalise_windows(db, self.frontend.norm_eps)

    def features(self, entry: RunEntry) -> Tensor:
        """Normalised maps of every window of every weld of a recording (file mode: the
        windows the artifact's `forward` cuts from the whole file)."""
        parts = [self.windows(f, w.n_samples) for w, f in self.welds(entry)]
        if not parts or sum(p.shape[0] for p in parts) < 1:
            raise AudioError(f"{entry.path}: no whole window in any weld")
        return torch.cat(parts)

    def bags(
        self,
        entries: Iterable[RunEntry],
        report: DataReport,
        progress: Callable[[Iterable[RunEntry]], Iterable[RunEntry]] | None = None,
    ) -> list[Bag]:
        """One bag per weld with at least one whole window; recordings that fail to decode,
        or hold no such weld, go into `report`, not into the list."""
        out = []
        for entry in progress(entries) if progress else entries:
            try:
                welds = self.welds(entry)
            except AudioError as exc:
                report.exclude(entry, str(exc).removeprefix(f"{entry.path}: "))
                continue
            kept = 0
            for i, (weld, frames) in enumerate(welds):
                if window_count(weld.n_samples, self.chunk_samples) < 1:
                    continue  # the daemon reports such a weld as too short, never judged
                out.append(Bag(entry, weld, frames, self.windows(frames, weld.n_samples), i))
                kept += 1
            if not kept:
                found = f"{len(welds)} weld(s), none of one whole window" if welds else "no weld"
                report.exclude(entry, f"{found} found by segmentation {self.segmentation!r}")
        return out
