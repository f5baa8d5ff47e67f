"""Defect clips: a judged weld's audio as FLAC plus a JSON sidecar, kept for human review.

Layout under ``state_dir/clips`` mirrors the training dataset, so a reviewed clip moves into
it unchanged except for the run id's label-code suffix::

    clips/unreviewed/<station>/<weld_id>/<weld_id>.flac
    clips/unreviewed/<station>/<weld_id>/<weld_id>.json    (result event + window probs)

The tree and the promotion of a reviewed clip into the dataset (``weldmon clips promote``,
`deploy.dataset_layout.promote_clip`, which the web console calls too) are declared in
`deploy.dataset_layout`; the dataset indexer reads the label from the run id's last two
characters.

Samples are stored as 16-bit PCM. The model's input is float32, but the microphones and the
whole training set are 16-bit, so 16 bits lose nothing from a 16-bit source (the round trip
is exact) and a float source loses at most half a step, 2**-16 of full scale (-96 dBFS), far
under any weld's noise floor. FLAC cannot store float, and a promoted clip then matches the
training data's format exactly.

Ownership and overload: :class:`ClipStore` is called from one executor thread at a time (a
lock serialises callers anyway); it copies nothing it is given and writes atomically (a
hidden temporary folder renamed into place, so a crash leaves either the whole clip or a
temporary folder that the next write removes). Retention runs after every write: oldest
first by count, age and free disk, never the clip just written. Every deletion and every
shortfall is counted in :attr:`ClipStore.counters`. :class:`ClipWriter` is the pipeline's
weld-audio hook on the event loop: it names the clip in the result at once and hands the write
to its one thread, at most ``MAX_PENDING_CLIPS`` at a time (beyond that a clip is skipped and
counted). What is kept and deleted is decided in ``monitor.ops.clip_policy``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import structlog

from deploy.dataset_layout import (
    AUDIO_SUFFIX,
    CLIPS_FOLDER,
    SIDECAR_SUFFIX,
    UNREVIEWED_FOLDER,
    ClipError,
    clip_audio_path,
    clip_folder,
)
from monitor.events import STATION_PATTERN, WeldResult
from monitor.ops.clip_policy import (
    BYTES_PER_MB,
    ClipsConfig,
    RetentionPlan,
    StoredClip,
    plan_retention,
    wants_clip,
)

TMP_PREFIX = ".tmp-"  # hidden: retention and reviewers skip folders that start with '.'
SIDECAR_VERSION = 1  # bumped when a sidecar field is removed or changes meaning
PCM16_FULL_SCALE = 32768  # int16 steps per unit of float amplitude (libsndfile's convention)
PCM16_MAX = 32767
PCM16_MIN = -32768
# Clips waiting for the writer thread at most; each holds one weld's audio (<= max_weld_s),
# so this bounds the memory a slow disk can pin. Beyond it a clip is skipped, logged, counted.
MAX_PENDING_CLIPS = 8
CLIP_WRITER_THREADS = 1  # ClipStore serialises writes anyway; one thread keeps order

log = structlog.get_logger()


def to_pcm16(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """float samples (full scale +-1) -> (int16 samples, how many were clipped or non-finite).

    Done here rather than by libsndfile because libsndfile wraps out-of-range floats unless
    clipping is switched on, which python-soundfile does not expose; a clip must never wrap.
    """
    x = np.asarray(samples, dtype=np.float64)
    bad = ~np.isfinite(x)
    x = np.where(bad, 0.0, x)
    scaled = np.rint(x * PCM16_FULL_SCALE)
    clipped = (scaled > PCM16_MAX) | (scaled < PCM16_MIN)
    pcm = np.clip(scaled, PCM16_MIN, PCM16_MAX).astype(np.int16)
    return pcm, int(np.count_nonzero(bad | clipped))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ClipStore:
    """Writes clips under ``state_dir/clips`` and applies retention after each write.

    Blocking (file I/O, FLAC encoding): the daemon calls :meth:`write` in an executor.
    """

    def __init__(self, state_dir: Path, settings: ClipsConfig) -> None:
        self.clips_dir = Path(state_dir) / CLIPS_FOLDER
        self.settings = settings
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {
            "written": 0,
            "skipped_by_policy": 0,
            "write_failed": 0,
            "bad_samples": 0,  # non-finite or beyond full scale, stored clipped
            "deleted_by_count": 0,
            "deleted_by_age": 0,
            "deleted_by_disk": 0,
            "delete_failed": 0,
            "short_of_free_space": 0,  # retention ran out of clips before reaching min_free_mb
            "stale_tmp_removed": 0,
        }

    @classmethod
    def in_folder(cls, clips_dir: Path, settings: ClipsConfig) -> ClipStore:
        """A store whose clips folder is ``clips_dir`` itself rather than
        ``<state_dir>/clips`` (``weldmon replay --clips DIR``, which has no state_dir)."""
        store = cls(clips_dir, settings)
        store.clips_dir = Path(clips_dir)
        return store

    def write(
        self,
        result: WeldResult,
        samples: np.ndarray,
        sample_rate: int,
        window_probs: Sequence[float] | None = None,
    ) -> Path | None:
        """Write the weld's audio (mono float, full scale +-1, at ``sample_rate`` Hz) and its
        sidecar if the policy wants it; return the FLAC path, or None when skipped.

        ``window_probs`` default to the result's own. Raises ClipError if the write fails
        (nothing partial is left in the clip tree).
        """
        if self.wanted(result) is None:
            return None
        return self.write_wanted(result, samples, sample_rate, window_probs)

    def wanted(self, result: WeldResult) -> Path | None:
        """The FLAC path the weld's clip will have if the policy keeps it; None (counted in
        ``skipped_by_policy``) if not. The one place the policy is applied."""
        if not wants_clip(self.settings.policy, result):
            with self._lock:
                self.counters["skipped_by_policy"] += 1
            return None
        return clip_audio_path(self.clips_dir, result.station, result.weld_id)

    def write_wanted(
        self,
        result: WeldResult,
        samples: np.ndarray,
        sample_rate: int,
        window_probs: Sequence[float] | None = None,
    ) -> Path:
        """`write` for a weld `wanted` already accepted (blocking; the writer's thread)."""
        mono = np.asarray(samples)
        if mono.ndim != 1 or mono.size == 0:
            raise ClipError(f"clip samples must be 1-D and non-empty, got shape {mono.shape}")
        if sample_rate <= 0:
            raise ClipError(f"sample_rate must be positive, got {sample_rate}")
        with self._lock:
            try:
                folder = self._write_locked(result, mono, sample_rate, window_probs)
            except (OSError, sf.LibsndfileError, RuntimeError) as exc:
                self.counters["write_failed"] += 1
                raise ClipError(f"cannot write clip for weld {result.weld_id}: {exc}") from exc
            self.counters["written"] += 1
            self._apply_retention(keep=folder)
        return folder / f"{result.weld_id}{AUDIO_SUFFIX}"

    def _write_locked(
        self,
        result: WeldResult,
        samples: np.ndarray,
        sample_rate: int,
        window_probs: Sequence[float] | None,
    ) -> Path:
        if not re.fullmatch(STATION_PATTERN, result.station) or "/" in result.weld_id:
            raise ClipError(f"unsafe station or weld id for a path: {result.weld_id!r}")
        final = clip_folder(self.clips_dir, result.station, result.weld_id)
        if final.exists():
            raise ClipError(f"{final} already exists (weld ids are unique)")
        station_dir = final.parent
        station_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp(station_dir)
        tmp = station_dir / f"{TMP_PREFIX}{result.weld_id}"
        tmp.mkdir()
        try:
            pcm, bad = to_pcm16(samples)
            if bad:
                self.counters["bad_samples"] += bad
                log.warning("clip_samples_clipped", weld_id=result.weld_id, samples=bad)
            audio = tmp / f"{result.weld_id}{AUDIO_SUFFIX}"
            with audio.open("wb") as fh:
                sf.write(fh, pcm, sample_rate, subtype="PCM_16", format="FLAC")
                fh.flush()
                os.fsync(fh.fileno())
            sidecar = self._sidecar(result, final, pcm.size, sample_rate, window_probs, bad)
            with (tmp / f"{result.weld_id}{SIDECAR_SUFFIX}").open("w") as fh:
                json.dump(sidecar, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            tmp.rename(final)
            _fsync_dir(station_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def _sidecar(
        self,
        result: WeldResult,
        final: Path,
        n_samples: int,
        sample_rate: int,
        window_probs: Sequence[float] | None,
        bad_samples: int,
    ) -> dict:
        audio_path = final / f"{result.weld_id}{AUDIO_SUFFIX}"
        event = result.model_copy(update={"clip_path": str(audio_path)})
        probs = list(window_probs) if window_probs is not None else result.window_probs
        return {
            "sidecar_version": SIDECAR_VERSION,
            "weld_id": result.weld_id,
            "station": result.station,
            "audio": {
                "file": audio_path.name,
                "sample_rate": sample_rate,
                "samples": n_samples,
                "duration_s": n_samples / sample_rate,
                "subtype": "PCM_16",
                "bad_samples": bad_samples,
            },
            "window_probs": [float(p) for p in probs] if probs is not None else None,
            "result": json.loads(event.to_json()),
        }

    def _remove_stale_tmp(self, station_dir: Path) -> None:
        # Under the lock no write is in flight, so any temporary folder is a crash leftover.
        for stale in station_dir.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
            self.counters["stale_tmp_removed"] += 1
            log.warning("clip_stale_tmp_removed", path=str(stale))

    def stored_clips(self) -> list[StoredClip]:
        """Every unreviewed clip folder (temporary folders excluded)."""
        found = []
        root = self.clips_dir / UNREVIEWED_FOLDER
        for audio in root.glob(f"*/[!.]*/*{AUDIO_SUFFIX}"):
            folder = audio.parent
            if audio.stem != folder.name:
                continue
            try:
                stat = audio.stat()
                size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            except OSError:
                continue  # deleted by a reviewer while we looked
            found.append(StoredClip(folder, stat.st_mtime, size))
        return found

    def apply_retention(self, keep: Path | None = None) -> RetentionPlan:
        """Delete what retention says (also run after every write); returns the plan."""
        with self._lock:
            return self._apply_retention(keep)

    def _apply_retention(self, keep: Path | None) -> RetentionPlan:
        self.clips_dir.mkdir(parents=True, exist_ok=True)
        plan = plan_retention(
            self.stored_clips(),
            settings=self.settings,
            now=time.time(),
            free_bytes=shutil.disk_usage(self.clips_dir).free,
            keep=keep,
        )
        for reason, clips in (
            ("by_age", plan.by_age),
            ("by_count", plan.by_count),
            ("by_disk", plan.by_disk),
        ):
            for clip in clips:
                try:
                    shutil.rmtree(clip.folder)
                except OSError as exc:
                    self.counters["delete_failed"] += 1
                    log.error("clip_delete_failed", path=str(clip.folder), error=str(exc))
                    continue
                self.counters[f"deleted_{reason}"] += 1
                log.info("clip_deleted", path=str(clip.folder), reason=reason)
        if plan.short_of_free_bytes:
            self.counters["short_of_free_space"] += 1
            log.error(
                "clip_disk_low",
                short_mb=round(plan.short_of_free_bytes / BYTES_PER_MB, 1),
                min_free_mb=self.settings.min_free_mb,
            )
        return plan


class ClipWriter:
    """The pipeline's weld-audio hook: asks the store's policy, names the clip in the result
    at once (its path is known before the write) and writes FLAC + sidecar on its own thread.

    A failed write is logged and reported through `on_error` (an ``error`` event); the
    result has already left with its ``clip_path``, and the error event names that path.
    """

    def __init__(
        self,
        store: ClipStore,
        sample_rate: int,
        on_error: Callable[[WeldResult, str], None],
    ) -> None:
        self.store = store
        self.sample_rate = sample_rate
        self._on_error = on_error
        self._pool = concurrent.futures.ThreadPoolExecutor(
            CLIP_WRITER_THREADS, thread_name_prefix="weldmon-clips"
        )
        self._pending: set[asyncio.Future[Path]] = set()
        self.counters = {"scheduled": 0, "skipped_backlog": 0, "failed": 0}

    @classmethod
    def for_config(
        cls,
        cfg: ClipsConfig,
        state_dir: Path,
        sample_rate: int,
        on_error: Callable[[WeldResult, str], None],
    ) -> ClipWriter | None:
        """The writer for the ``clips:`` section; None when the policy keeps nothing."""
        if cfg.policy == "none":
            return None
        return cls(ClipStore(state_dir, cfg), sample_rate, on_error)

    def use_config(self, cfg: ClipsConfig, state_dir: Path) -> None:
        """Clips from now on follow `cfg` (a reload); writes in flight finish as they were."""
        self.store = ClipStore(state_dir, cfg)

    def stats(self) -> dict[str, int]:
        """The writer's and the store's counters (the stats log)."""
        return {**self.counters, **self.store.counters}

    def __call__(self, result: WeldResult, samples: np.ndarray, probs: list[float]) -> WeldResult:
        """Called on the event loop with the weld's audio when its result is ready."""
        path = self.store.wanted(result)
        if path is None:
            return result
        if len(self._pending) >= MAX_PENDING_CLIPS:
            self.counters["skipped_backlog"] += 1
            log.error("clip_skipped_backlog", weld_id=result.weld_id, pending=len(self._pending))
            return result
        result = result.model_copy(update={"clip_path": str(path)})
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._pool, self.store.write_wanted, result, samples, self.sample_rate, probs
        )
        self._pending.add(future)
        future.add_done_callback(functools.partial(self._done, result=result))
        self.counters["scheduled"] += 1
        return result

    def _done(self, future: asyncio.Future[Path], result: WeldResult) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.counters["failed"] += 1
            log.error("clip_write_failed", weld_id=result.weld_id, error=str(exc))
            self._on_error(result, f"clip {result.clip_path} not written: {exc}")
        else:
            log.info("clip_written", weld_id=result.weld_id, path=result.clip_path)

    async def make_room(self) -> None:
        """Wait until at most half the backlog is pending, so the next welds' clips are not
        skipped. For replay, which reads files faster than clips are written and has no
        live deadline; the daemon never waits here (a slow disk must not delay verdicts)."""
        while len(self._pending) >= MAX_PENDING_CLIPS // 2:
            await asyncio.wait(set(self._pending), return_when=asyncio.FIRST_COMPLETED)

    async def close(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the writes in flight, then release the thread."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)
        if self._pending:
            log.error("clips_unfinished_at_stop", pending=len(self._pending))
        self._pool.shutdown(wait=False, cancel_futures=True)
