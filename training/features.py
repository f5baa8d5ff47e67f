"""Decode each recording once and keep its log-mel windows: the training data path.

The original re-decoded a whole FLAC file for every 1 s window. Here a file is read once
(`deploy.audio.read_recording`), mixed and cut with `deploy.windows`, and turned into
normalised log-mel maps with the artifact's own front end (`deploy.frontend.LogMel`), so
training can call `classifier.backbone(features)` directly while the exported artifact keeps
the front end inside. Features are keyed by the file's content hash and the front-end
parameters: an edited file or a changed front end can never reuse stale maps. With a cache
folder they also persist across runs (CV folds and sweeps share one store in memory anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from deploy.audio import read_recording
from deploy.errors import AudioError
from deploy.frontend import FrontEndParams, LogMel
from deploy.windows import cut_windows, mix_channels
from training.dataset import DataReport, RunEntry

FEATURE_BATCH_WINDOWS = 64  # windows per front-end call: bounds the STFT's temporary memory
HASH_BLOCK_BYTES = 1 << 20  # read size while hashing file content


@dataclass(frozen=True)
class Bag:
    """One recording as a MIL bag: log-mel maps of its whole windows and its labels."""

    entry: RunEntry
    features: Tensor  # float32 [n_windows, 1, n_mels, frames]

    @property
    def label(self) -> int:
        return self.entry.binary_label

    @property
    def n_windows(self) -> int:
        return int(self.features.shape[0])


def content_hash(path: Path) -> str:
    digest = hashlib.sha1()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def frontend_key(frontend: FrontEndParams, chunk_samples: int) -> str:
    blob = json.dumps({**frontend.as_dict(), "chunk_samples": chunk_samples}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@torch.inference_mode()
def compute_features(samples: np.ndarray, logmel: LogMel, chunk_samples: int) -> Tensor:
    """Decoded audio [C, N] -> log-mel maps [T, 1, n_mels, frames] of its whole windows."""
    windows = cut_windows(mix_channels(torch.from_numpy(samples)), chunk_samples)
    parts = [
        logmel(windows[i : i + FEATURE_BATCH_WINDOWS])
        for i in range(0, windows.shape[0], FEATURE_BATCH_WINDOWS)
    ]
    return torch.cat(parts).clone()  # clone: leave inference mode so autograd may use them


class FeatureStore:
    """Content-keyed log-mel features; one decode per file per process (or per cache folder)."""

    def __init__(
        self, frontend: FrontEndParams, chunk_samples: int, cache_dir: Path | None = None
    ) -> None:
        self.frontend = frontend
        self.chunk_samples = chunk_samples
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.key = frontend_key(frontend, chunk_samples)
        self._logmel = LogMel(frontend).eval()
        self._memory: dict[str, Tensor] = {}
        self.decodes = 0  # files decoded by this store (a test and the benchmark read it)

    def _disk_path(self, digest: str) -> Path | None:
        return self.cache_dir / f"{digest}-{self.key}.npy" if self.cache_dir else None

    def features(self, entry: RunEntry) -> Tensor:
        """Log-mel maps of one recording; raises AudioError if it cannot be decoded."""
        try:
            digest = content_hash(entry.path)
        except OSError as exc:
            raise AudioError(f"{entry.path}: cannot read ({exc.strerror or exc})") from exc
        if digest in self._memory:
            return self._memory[digest]
        disk = self._disk_path(digest)
        if disk is not None and disk.is_file():
            feats = torch.from_numpy(np.load(disk))
        else:
            rec = read_recording(entry.path, self.frontend.sample_rate)
            self.decodes += 1
            feats = compute_features(rec.samples, self._logmel, self.chunk_samples)
            if disk is not None:
                disk.parent.mkdir(parents=True, exist_ok=True)
                tmp = disk.with_name(f"{disk.name}.{os.getpid()}.tmp")
                with tmp.open("wb") as fh:
                    np.save(fh, feats.numpy())
                tmp.replace(disk)  # atomic: concurrent runs never read half a file
        if feats.shape[0] < 1:
            raise AudioError(f"{entry.path}: shorter than one window")
        self._memory[digest] = feats
        return feats

    def bags(
        self,
        entries: Iterable[RunEntry],
        report: DataReport,
        progress: Callable[[Iterable[RunEntry]], Iterable[RunEntry]] | None = None,
    ) -> list[Bag]:
        """Bags for `entries`; files that fail to decode go into `report`, not into the list."""
        out = []
        for entry in progress(entries) if progress else entries:
            try:
                out.append(Bag(entry, self.features(entry)))
            except AudioError as exc:
                report.exclude(entry, str(exc).removeprefix(f"{entry.path}: "))
        return out
