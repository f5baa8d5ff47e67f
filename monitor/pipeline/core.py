"""The monitor's one data path, shared by `weldmon run` and `weldmon replay`.

    AudioBlock [frames, channels] at the source rate (sound device or file)
      -> StationSplitter  (mix: channel mean -> one station; per_channel: one per channel)
      -> StationResampler (one multichannel soxr stream for all stations, to the model rate)
      -> SampleHistory + segmenter (crackle | gate | current | trigger | file)
         -> start/end boundaries (every station's frames measured in one call:
         `process_blocks`); process data (`push_process`, replay's `queue_process`) goes to
         the station's `ProcessTrack` and, in current mode, its segmenter
      -> WeldWindower (chunk_samples windows aligned at the weld start)
      -> InferenceWorker (one thread, batched) -> WeldTracker -> events -> `emit`

Stations are split before resampling (not after, as the architecture sketch draws it): mixing
is linear, so the order changes nothing but rounding, and a mixed station then costs one
resampler channel instead of one per channel. Every station of a pipeline is fed by the same
blocks, so they share one stream epoch and one resampler; per block the work that does not
depend on a station's own state (resampling, the gate's FFT) is one call for all stations,
which costs the same per sample but saves the per-call overhead that dominated at 0.1 s
blocks (docs/benchmarks.md, "Per-block costs behind code choices").

Threads and ownership: `feed` and `end_stream` run on the event loop and only copy and count;
windows go to the inference thread, and one consumer task (`monitor.pipeline.verdicts`)
awaits their probabilities in order and turns them into events, so events of one pipeline
leave in the order they happened.
Back-pressure: at most `max_in_flight` windows wait for inference; beyond that `feed` waits,
which stalls the source (replay reads slower; the daemon's capture ring buffer fills, and its
overflow is counted as dropped frames and marks welds degraded).

Model swap (`use_model`): welds that start afterwards use the new worker and model facts; a
weld in progress keeps the worker and `TrackerOptions` it started with until its result, so
its windows and its `model_sha256` all come from one model. `wait_unused` tells the owner
when the old worker has no weld left.

Weld audio (`weld_audio` hook, for defect clips): while a weld is open its station history
holds every sample from the weld's start (`SampleHistory.hold_from`), and at the end
boundary the weld's model-rate audio is read from it as one time range and handed to the
hook with the result: one copy, owned by the hook. Memory is bounded by the longest weld the
segmenter allows (`max_weld_s`, plus one window): at most stations x max_weld_s x model rate
x 4 bytes (600 s at 16 kHz: 38 MB per station), only while a weld is open and a hook is set.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from typing import Literal

import numpy as np
import structlog

from deploy.segment.factory import AUDIO_ONLY_MODES
from deploy.segment.process import ProcessSample, ProcessTrack
from deploy.segment.protocol import Boundary, Segmenter, process_blocks
from monitor.audio.blocks import AudioBlock
from monitor.events import DegradedReason, EndReason, Source
from monitor.events.inbound import ProcessReading
from monitor.pipeline.inference import InferenceWorker
from monitor.pipeline.process_feed import ProcessFeed
from monitor.pipeline.resample import StationChunk, StationResampler
from monitor.pipeline.settings import PipelineCounters, PipelineSettings
from monitor.pipeline.stations import StationSplitter
from monitor.pipeline.tracker import TrackerOptions, WeldTracker, check_swappable
from monitor.pipeline.trigger_drops import TriggerDrops
from monitor.pipeline.verdicts import (
    EventSink,
    OpenWeld,
    VerdictQueue,
    WeldAudioHook,
    WeldObserver,
    WindowLatencyHook,
)
from monitor.pipeline.weld_facts import weld_facts
from monitor.pipeline.windower import SampleHistory, WeldWindower
from monitor.segment.factory import (
    RULES,
    max_weld_s,
    new_segmenter,
)
from monitor.segment.triggers import (
    DEFAULT_TRIGGER_MAX_WELD_S,
    TriggerIgnored,
    TriggerSegmenter,
)

HISTORY_MARGIN_S = 5.0  # history beyond the segmenter's look-back: covers the largest block

log = structlog.get_logger(__name__)


class _Station:
    """Everything one station owns: history, segmenter and its open weld."""

    def __init__(self, name: str, history: SampleHistory) -> None:
        self.name = name
        self.history = history
        self.segmenter: Segmenter | None = None
        self.epoch: int | None = None
        self.epoch_utc = 0.0
        self.source: Source | None = None
        self.weld: OpenWeld | None = None
        self.next_part: dict[str, str] = {}  # the last part announced, for the next weld
        self.process: ProcessTrack | None = None  # this epoch's process samples


class Pipeline:
    """Blocks in, weld events out. One instance per source; use `async with`."""

    def __init__(
        self,
        settings: PipelineSettings,
        options: TrackerOptions,
        worker: InferenceWorker,
        emit: EventSink,
        source_rate: int,
        *,
        weld_audio: WeldAudioHook | None = None,
        on_window: WindowLatencyHook | None = None,
        weld_audio_bound_s: float | None = None,
        observer: WeldObserver | None = None,
    ) -> None:
        """`weld_audio_bound_s`: the most audio a weld's clip keeps when the segmenter sets
        no bound of its own (one weld per file: replay passes the file's length)."""
        self.settings = settings
        self._weld_audio_bound_s = weld_audio_bound_s
        self.options = options
        self.worker = worker
        self.emit = emit
        self.model_rate = options.model.sample_rate
        self.chunk = options.model.chunk_samples
        self.splitter = StationSplitter(settings.channel_mode, settings.stations)
        self.counters = PipelineCounters()
        self._source_rate = source_rate
        lookback = self._new_segmenter().lookback_samples
        capacity = lookback + 2 * self.chunk + round(HISTORY_MARGIN_S * self.model_rate)
        held = capacity + self._max_weld_samples() if weld_audio is not None else capacity
        self._stations = [
            _Station(name, SampleHistory(capacity, held)) for name in settings.stations
        ]
        self._resampler = StationResampler(
            source_rate, self.model_rate, channels=self.splitter.resampler_channels
        )
        self._verdicts = VerdictQueue(
            emit,
            settings.max_in_flight,
            progress=settings.progress,
            weld_audio=weld_audio,
            on_window=on_window,
            observer=observer,
        )
        self._keeps_audio = weld_audio is not None
        self._epoch: int | None = None  # the stream epoch the stations are in, None between
        self._process = ProcessFeed(self.model_rate, settings.process_clock_offset_s)
        self._trigger_drops = TriggerDrops()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Pipeline:
        self._verdicts.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._verdicts.close()

    async def drain(self) -> None:
        """Wait until every window fed so far is judged and its events emitted."""
        await self._verdicts.drain()

    def counts(self) -> dict[str, int]:
        """Every counter of the pipeline by name (the stats log)."""
        return {
            **self.counters.as_dict(),
            **self._process.counters.as_dict(),
            **self._trigger_drops.as_dict(),
            **asdict(self._verdicts.counters),
        }

    @property
    def source_rate(self) -> int:
        """The rate (Hz) of the blocks this pipeline accepts."""
        return self._source_rate

    @property
    def oldest_pending_at(self) -> float | None:
        """time.monotonic() when the oldest window still awaiting its probability was
        submitted; None when none waits. Safe to read from another thread."""
        return self._verdicts.oldest_pending_at

    def use_model(self, options: TrackerOptions, worker: InferenceWorker) -> None:
        """Welds that start from now on are judged by `worker` and carry `options`; welds in
        progress finish with the model they started with."""
        check_swappable(options.model, self.options.model)
        self.options = options
        self.worker = worker

    def welds_using(self, worker: InferenceWorker) -> int:
        """Welds started on `worker` whose result has not been emitted yet."""
        return self._verdicts.welds_using(worker)

    async def wait_unused(self, worker: InferenceWorker) -> None:
        """Return once no weld started on `worker` is waiting for its result."""
        await self._verdicts.wait_unused(worker)

    @property
    def open_welds(self) -> list[str]:
        """weld_ids of the welds in progress."""
        return [st.weld.tracker.weld_id for st in self._stations if st.weld is not None]

    # -- input -------------------------------------------------------------------------------

    async def feed(self, block: AudioBlock, source: Source) -> None:
        """Push one block through every station (waits while inference is saturated)."""
        self._verdicts.check()
        if block.sample_rate != self._source_rate:
            raise ValueError(
                f"block rate {block.sample_rate} Hz, pipeline built for {self._source_rate} Hz"
            )
        self.counters.blocks += 1
        self.counters.frames += block.frames
        self.counters.dropped_frames += block.dropped_frames
        self.counters.nonfinite_samples += block.nonfinite_samples
        samples = self.splitter.resampler_input(block.samples)
        if self._epoch != block.stream_epoch:
            if self._epoch is not None:
                # A new epoch without end_stream: the stream broke under us.
                await self.end_stream(EndReason.DEVICE_LOST, DegradedReason.DEVICE_LOST)
            self._begin_epoch(block, source)
        befores = [st.weld for st in self._stations]
        for st, before in zip(self._stations, befores, strict=True):
            # The source refines frame 0's UTC over the epoch's first seconds; welds take the
            # latest estimate when they start.
            st.epoch_utc = block.epoch_utc
            if before is not None:
                self._flag_block(before, block)
        chunk = self._resampler.process(samples, block.start_frame, block.stream_epoch)
        await self._advance(self._stations, self._station_chunks(chunk), self._default_end_reason())
        for st, before in zip(self._stations, befores, strict=True):
            if st.weld is not None and st.weld is not before:
                self._flag_block(st.weld, block)  # the weld began inside this block

    @staticmethod
    def _flag_block(weld: OpenWeld, block: AudioBlock) -> None:
        if block.dropped_frames:
            weld.tracker.degrade(DegradedReason.DROPPED_AUDIO, block.dropped_frames)
        if block.nonfinite_samples:
            weld.tracker.degrade(DegradedReason.NONFINITE_SAMPLES)

    async def end_stream(
        self, end_reason: EndReason, degraded_reason: DegradedReason | None = None
    ) -> None:
        """The stream ended (file end, device lost, shutdown): flush the resamplers and close
        every open weld with `end_reason` (and `degraded_reason`, if any)."""
        if self._epoch is None:
            return
        tails = self._station_chunks(self._resampler.flush())
        for st, tail in zip(self._stations, tails, strict=True):
            await self._end_station(st, tail, end_reason, degraded_reason)
        self._epoch = None

    def push_trigger(
        self,
        station: str,
        state: Literal["start", "stop"],
        at_utc: float,
        context: dict[str, str] | None = None,
    ) -> bool:
        """A trigger message for `station` that arrived at `at_utc` (a start may name its
        part in `context`); False if ignored."""
        for st in self._stations:
            if st.name == station and isinstance(st.segmenter, TriggerSegmenter):
                index = round((at_utc - st.epoch_utc) * self.model_rate)
                taken = st.segmenter.push(state, index, context)
                self._trigger_drops.collect(st.name, st.segmenter)
                return taken
        self._trigger_drops.count(station, Counter([TriggerIgnored.UNKNOWN_STATION]))
        return False

    def announce_part(self, station: str, context: dict[str, str]) -> bool:
        """The next part at `station` (e.g. a barcode scan): its next weld carries `context`
        (a trigger start's own keys win); a later announcement replaces it. False for an
        unknown station."""
        for st in self._stations:
            if st.name == station:
                st.next_part = dict(context)
                return True
        return False

    def _start_context(self, st: _Station) -> dict[str, str] | None:
        context = st.next_part
        st.next_part = {}
        if isinstance(st.segmenter, TriggerSegmenter):
            context = {**context, **st.segmenter.take_start_context()}
        return context or None

    def push_process(self, station: str, readings: list[ProcessReading], bad: int = 0) -> int:
        """Live process readings for `station` (``bad``: how many its message held that were
        already skipped), placed by their times; returns how many were taken (the rest are
        counted, see `monitor.pipeline.process_feed`)."""
        counters = self._process.counters
        counters.process_samples_bad += bad
        st = next((s for s in self._stations if s.name == station), None)
        if st is None or st.process is None:
            counters.process_samples_ignored += len(readings)
            return 0
        readings = self._process.not_ahead(station, readings)
        return self._process.push(
            st.process, st.segmenter, self._process.placed(readings, st.epoch_utc)
        )

    def queue_process(self, samples: list[ProcessSample]) -> None:
        """Process samples already on the stream's clock (replay: a sensor log, its offset
        applied) for every station, pushed when the stream's epoch begins."""
        self._process.queue(samples)

    # -- internals ---------------------------------------------------------------------------

    def _new_segmenter(self) -> Segmenter:
        return new_segmenter(self.settings.segmenter, self.model_rate)

    def _max_weld_samples(self) -> int:
        # One weld per file (inf) is replay's mode: the file's length, which replay passes.
        seconds = max_weld_s(self.settings.segmenter)
        if not math.isfinite(seconds) and self._weld_audio_bound_s is not None:
            seconds = self._weld_audio_bound_s
        bound = seconds * self.model_rate + self.chunk
        return int(bound) if math.isfinite(bound) else 0

    def _default_end_reason(self) -> EndReason:
        return RULES[self.settings.segmentation].end_reason

    def _begin_epoch(self, block: AudioBlock, source: Source) -> None:
        self._epoch = block.stream_epoch
        keep_s = max_weld_s(self.settings.segmenter)
        keep_s = keep_s if math.isfinite(keep_s) else DEFAULT_TRIGGER_MAX_WELD_S
        for st in self._stations:
            st.epoch_utc = block.epoch_utc
            st.source = source
            st.segmenter = self._new_segmenter()
            st.history.reset(round(block.start_frame * self.model_rate / self._source_rate))
            st.process = ProcessTrack(self.model_rate, keep_s)
            if self._process.queued:
                self._process.push(st.process, st.segmenter, self._process.queued)

    def _station_chunks(self, chunk: StationChunk) -> list[StationChunk]:
        """The resampler's chunk, one mono chunk per station."""
        if chunk.samples.ndim == 1:
            return [chunk]
        # One transposed copy: every station's row is then contiguous.
        rows = np.ascontiguousarray(chunk.samples.T)
        return [StationChunk(row, chunk.start_index, chunk.epoch) for row in rows]

    async def _end_station(
        self,
        st: _Station,
        tail: StationChunk,
        end_reason: EndReason,
        degraded_reason: DegradedReason | None,
    ) -> None:
        if st.segmenter is None:
            return
        await self._advance([st], [tail], self._default_end_reason())
        if st.weld is not None and degraded_reason is not None:
            st.weld.tracker.degrade(degraded_reason)
        for b in st.segmenter.close(st.history.end_index):
            await self._boundary(st, b, end_reason)
        self._trigger_drops.collect(st.name, st.segmenter)
        st.segmenter = None

    async def _advance(
        self, stations: list[_Station], chunks: list[StationChunk], end_reason: EndReason
    ) -> None:
        """Each station's chunk of one block into its history and through its segmenter (the
        frames of all stations measured in one call, `process_blocks`), then its welds."""
        live = [(st, c) for st, c in zip(stations, chunks, strict=True) if c.samples.size]
        if not live:
            return
        segmenters: list[Segmenter] = []
        for st, chunk in live:
            assert st.segmenter is not None
            st.history.append(chunk.samples, chunk.start_index)
            segmenters.append(st.segmenter)
        # Every sample goes to the segmenter, digital silence included (the gate keeps it out
        # of its noise floor itself), so a live stream and a replayed file share one frame grid.
        found = process_blocks(segmenters, [(c.samples, c.start_index) for _, c in live])
        for (st, chunk), boundaries in zip(live, found, strict=True):
            await self._act(st, chunk, boundaries, end_reason)

    async def _act(
        self,
        st: _Station,
        chunk: StationChunk,
        boundaries: list[Boundary],
        end_reason: EndReason,
    ) -> None:
        """Open and close welds at `boundaries` and cut the open weld's windows."""
        self._trigger_drops.collect(st.name, st.segmenter)
        for b in boundaries:
            reason = EndReason.MAX_LENGTH if b.forced else end_reason
            await self._boundary(st, b, reason)
        if st.weld is not None:
            windows = st.weld.windower.windows_until(st.history, chunk.end_index)
            await self._verdicts.submit(st.weld, windows)
            assert st.segmenter is not None
            await self._verdicts.confirm(st.weld, st.segmenter.arc_confirmed_until)

    async def _boundary(self, st: _Station, b: Boundary, end_reason: EndReason) -> None:
        if b.kind == "start":
            if st.weld is not None:  # segmenters never do this; be loud if one does
                raise RuntimeError(f"{st.name}: start at {b.index} while a weld is open")
            assert st.source is not None
            source = st.source
            if source.type == "file":  # replay: where the weld lies in its file
                source = source.model_copy(update={"start_s": b.index / self.model_rate})
            tracker = WeldTracker(
                self.options,
                st.name,
                source,
                b.index,
                st.epoch_utc,
                context=self._start_context(st),
            )
            if self._keeps_audio:
                st.history.hold_from(b.index)
            st.weld = OpenWeld(tracker, WeldWindower(b.index, self.chunk), self.worker)
            self.counters.welds_started += 1
            await self._verdicts.started(st.weld)
            return
        weld = st.weld
        if weld is None:
            raise RuntimeError(f"{st.name}: end at {b.index} without an open weld")
        await self._verdicts.submit(weld, weld.windower.windows_until(st.history, b.index))
        audio = self._weld_samples(st, weld, b.index) if self._keeps_audio else None
        facts = weld_facts(
            b,
            weld.windower.start_index,
            self.model_rate,
            track=st.process if st.process else None,
            dropouts=RULES[self.settings.segmentation].dropouts,
            in_file=st.source is not None and st.source.type == "file",
            check=self.settings.segmentation in AUDIO_ONLY_MODES,
        )
        await self._verdicts.ended(weld, b.index, end_reason, audio, facts)
        st.weld = None

    def _weld_samples(self, st: _Station, weld: OpenWeld, end_index: int) -> np.ndarray:
        """The weld's audio [start, end) read from the held history, and the hold released."""
        history, start = st.history, weld.windower.start_index
        if history.held_lost:
            self.counters.weld_audio_truncated += 1
            log.warning("weld_audio_truncated", weld_id=weld.tracker.weld_id, kept=history.capacity)
        first = max(start, history.start_index)
        samples = history.read(first, max(first, min(end_index, history.end_index)))
        history.release()
        return samples
