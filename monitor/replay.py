"""`weldmon replay`: recorded files through the daemon's own pipeline.

Every weld result is printed on stdout as one JSON line (the result event's own JSON, as
published); a file that cannot be read gives one JSON error line instead (an `error` event
with code `bad_audio`) and the other files go on. A weld already open when a file breaks off
is closed as degraded (`unreadable_audio`) rather than dropped. Progress bar (multi-file) and
the summary go to stderr. Files are replayed as fast as the CPU allows, or at real-time pace.

Process data: a sensor log beside a file (same stem, ``.csv``: the dataset's layout) is the
welder's process data for it, placed on the file's clock by the offset that lines its arc
current up with the file's own level envelope (`deploy.sensorlog.audio_clock_offset`);
every result then carries its process record, and ``--segmentation current`` cuts the welds
by it (a file without a usable log is then an error line, code ``no_process_data``). Results
carry ``source.start_s`` / ``source.end_s``: where the weld lies in its file.

Replay never touches a live daemon's MQTT state: it connects only when asked (`publish`),
then with a client id of its own, without the outbox and without the retained status or a
will (`monitor.runtime.replay_link`); every event it makes carries ``replay: true``.

Clips: asked for (`clips_dir`, ``--clips DIR``), replay keeps the judged welds' audio the way
the daemon does (`monitor.ops.clips`, the config's ``clips:`` policy and retention), in the
daemon's clip layout under that folder, and every result names its clip (``clip_path``), so
`weldmon console --clips DIR` plays, draws and promotes replayed welds like live ones. Replay
waits for the clip writer rather than skipping clips (it has no live deadline).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import structlog
from tqdm import tqdm

from deploy.audio import read_recording
from deploy.errors import AudioError, WeldmonError
from deploy.loader import DeployModel
from deploy.segment.modes import SegmentationMode
from deploy.segment.process import ProcessSample
from deploy.sensorlog import process_samples_beside
from monitor.audio.files import FileSource, Pacer
from monitor.config import MonitorConfig
from monitor.events import (
    DegradedReason,
    EndReason,
    ErrorCode,
    ErrorEvent,
    Event,
    Source,
    WeldResult,
)
from monitor.ops.clip_policy import ClipsConfig
from monitor.ops.clips import ClipStore, ClipWriter
from monitor.pipeline.core import Pipeline
from monitor.pipeline.inference import InferenceWorker
from monitor.pipeline.stations import StationLayoutError
from monitor.pipeline.tracker import TrackerOptions
from monitor.pipeline.verdicts import WeldAudioHook
from monitor.publish.router import EventRouter
from monitor.publish.settings import MqttConfig
from monitor.runtime import error_event, pipeline_settings, replay_link, tracker_options
from monitor.segment.factory import RULES

log = structlog.get_logger(__name__)


@dataclass
class ReplaySummary:
    """What a replay did."""

    files: int = 0
    files_failed: int = 0
    welds: int = 0
    defects: int = 0
    degraded: int = 0
    clips: int | None = None  # clips written (with --clips; None without)
    failed_paths: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One human line for stderr."""
        return (
            f"weldmon replay: {self.files} file(s), {self.files_failed} failed, "
            f"{self.welds} weld(s), "
            f"{self.defects} defect(s), {self.degraded} degraded"
            + (f", {self.clips} clip(s) kept" if self.clips is not None else "")
        )


class _StdoutResults:
    """Prints results (and file errors) as JSON lines and keeps the summary."""

    def __init__(self, out: TextIO, summary: ReplaySummary) -> None:
        self.out = out
        self.summary = summary

    def __call__(self, event: Event) -> None:
        if isinstance(event, WeldResult):
            self.summary.welds += 1
            self.summary.defects += event.label
            self.summary.degraded += int(event.degraded)
        elif not isinstance(event, ErrorEvent):
            return
        self.out.write(event.to_json().decode() + "\n")
        self.out.flush()


async def replay_files(
    cfg: MonitorConfig,
    model: DeployModel,
    files: Sequence[Path],
    *,
    segmentation: SegmentationMode | None = None,
    realtime: bool = False,
    out: TextIO | None = None,
    progress: bool | None = None,
    publish: MqttConfig | None = None,
    clips_dir: Path | None = None,
    clips: ClipsConfig | None = None,
) -> ReplaySummary:
    """Replay `files` in order through one pipeline per file; returns the summary. With
    `publish`, events also go to that broker; with `clips_dir`, the welds' clips are kept
    there by the `clips` settings (default: the config's); see the module docstring."""
    mode = RULES[SegmentationMode(segmentation or cfg.segmentation.mode)].replay_as
    out = sys.stdout if out is None else out  # looked up late: tests and callers redirect it
    summary = ReplaySummary()
    options = tracker_options(cfg, model, mode)
    show_bar = len(files) > 1 if progress is None else progress
    source = FileSource(cfg.audio.block_s)
    pacer = Pacer(realtime)
    worker = InferenceWorker(model, cfg.inference.max_batch_windows, cfg.inference.queue_windows)
    link = (
        replay_link(publish, cfg.stop_timeout_s)
        if publish is not None
        else contextlib.nullcontext(None)
    )
    async with link as publisher:
        router = EventRouter(replay=True)
        if publisher is not None:
            router.add(publisher.send, durable=True)
        router.add(_StdoutResults(out, summary))
        writer = None
        if clips_dir is not None:
            store = ClipStore.in_folder(clips_dir, clips or cfg.clips)
            writer = ClipWriter(store, model.sample_rate, _clip_failed(router, options))
        with (
            worker,
            tqdm(
                total=len(files), desc="replay", unit="file", disable=not show_bar, file=sys.stderr
            ) as bar,
        ):
            for path in files:
                summary.files += 1
                code = ErrorCode.BAD_AUDIO
                try:
                    problem = await _replay_one(
                        cfg, mode, options, worker, router, source, pacer, path, writer
                    )
                except NoProcessDataError as exc:
                    problem, code = str(exc), ErrorCode.NO_PROCESS_DATA
                if problem is not None:
                    summary.files_failed += 1
                    summary.failed_paths.append(str(path))
                    origin = Source(type="file", name=str(path))
                    router(error_event(options.model, code, problem, source=origin))
                bar.update(1)
        if writer is not None:  # before the link closes: a failed clip is an error event
            await writer.close(CLIPS_CLOSE_TIMEOUT_S)
            summary.clips = writer.counters["scheduled"] - writer.counters["failed"]
    return summary


CLIPS_CLOSE_TIMEOUT_S = 60.0  # the last clips' writes; each is one weld's FLAC (<= max_weld_s)


def _clip_failed(router: EventRouter, options: TrackerOptions) -> Callable[[WeldResult, str], None]:
    def report(result: WeldResult, message: str) -> None:
        fields = {"station": result.station, "weld_id": result.weld_id}
        router(error_event(options.model, ErrorCode.CLIP_FAILED, message, **fields))

    return report


def _replay_clip_hook(writer: ClipWriter) -> WeldAudioHook:
    # The sidecar keeps the result as published: marked as a replay like every event here.
    def keep(result: WeldResult, samples: np.ndarray, probs: list[float]) -> WeldResult:
        return writer(result.model_copy(update={"replay": True}), samples, probs)

    return keep


async def _replay_one(
    cfg: MonitorConfig,
    mode: SegmentationMode,
    options: TrackerOptions,
    worker: InferenceWorker,
    router: EventRouter,
    source: FileSource,
    pacer: Pacer,
    path: Path,
    clips: ClipWriter | None = None,
) -> str | None:
    """One file; returns the problem (for the error record) or None."""
    try:
        stream = source.open(path)
    except AudioError as exc:
        return str(exc)
    with stream:
        stations = None
        if cfg.audio.channel_mode == "per_channel" and not cfg.audio.stations:
            stations = cfg.audio.station_names(stream.channels)
        settings = pipeline_settings(cfg, mode, stations)
        origin = Source(type="file", name=str(path))
        try:
            hook = _replay_clip_hook(clips) if clips is not None else None
            pipeline = Pipeline(
                settings,
                options,
                worker,
                router,
                stream.sample_rate,
                weld_audio=hook,
                weld_audio_bound_s=stream.frames / stream.sample_rate,
            )
            pipeline.splitter.check_channels(stream.channels)
        except StationLayoutError as exc:
            return f"{path}: {exc}"
        samples, why = sensor_log_samples(path, options.model.sample_rate)
        if samples is not None:
            pipeline.queue_process(samples)
        elif mode is SegmentationMode.CURRENT:
            raise NoProcessDataError(f"{path}: current mode needs the run's sensor log: {why}")
        async with pipeline:
            pacer.start()
            try:
                for block in stream.blocks():
                    if clips is not None:
                        await clips.make_room()
                    await pipeline.feed(block, origin)
                    await pacer.wait(block.end_frame / block.sample_rate)
            except AudioError as exc:
                await pipeline.end_stream(EndReason.FILE_END, DegradedReason.UNREADABLE_AUDIO)
                return str(exc)
            await pipeline.end_stream(EndReason.FILE_END)
    return None


class NoProcessDataError(WeldmonError):
    """Replay in current mode of a file without a usable sensor log."""


def sensor_log_samples(path: Path, rate: int) -> tuple[list[ProcessSample] | None, str]:
    """The sensor log beside ``path`` as process samples on its clock at ``rate``, or None
    and why not (`deploy.sensorlog.process_samples_beside`; logged when a log is there but
    unusable)."""
    csv = path.with_suffix(".csv")
    if not csv.is_file():
        return None, f"no {csv.name} beside it"
    try:
        mono = read_recording(path, rate).samples.mean(axis=0)
    except AudioError as exc:
        log.warning("sensor_log_unusable", path=str(csv), error=str(exc))
        return None, str(exc)
    samples, why = process_samples_beside(path, mono, rate)
    if samples is None:
        log.warning("sensor_log_unusable", path=str(csv), error=why)
    return samples, why
