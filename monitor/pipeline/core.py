"""The monitor's one data path, shared by `weldmon run` and `weldmon replay`.

    AudioBlock [frames, channels] at the source rate (sound device or file)
      -> StationSplitter  (mix: channel mean -> one station; per_channel: one per channel)
      -> StationResampler (one multichannel soxr stream for all stations, to the model rate)
      -> SampleHistory + segmenter (gate | trigger | file) -> start/end boundaries
         (the gate's band power of every station's frames in one call)
      -> WeldWindower (chunk_samples windows aligned at the weld start)
      -> InferenceWorker (one thread, batched) -> WeldTracker -> events -> `emit`

Stations are split before resampling (not after, as the architecture sketch draws it): mixing
is linear, so the order changes nothing but rounding, and a mixed station then costs one
resampler channel instead of one per channel. Every station of a pipeline is fed by the same
blocks, so they share one stream epoch and one resampler; per block the work that does not
depend on a station's own state (resampling, the gate's FFT) is one call for all stations,
which costs the same per sample but saves the per-call overhead that dominated at 0.1 s
blocks (8 stations: ~0.35 ms of ~1.9 ms per block).

Threads and ownership: `feed` and `end_stream` run on the event loop and only copy and count;
windows go to the inference thread, and one consumer task awaits their probabilities in order
and turns them into events, so events of one pipeline leave in the order they happened.
Back-pressure: at most `max_in_flight` windows wait for inference; beyond that `feed` waits,
which stalls the source (replay reads slower; the daemon's capture ring buffer fills, and its
overflow is counted as dropped frames and marks welds degraded).

Model swap (`use_model`): welds that start afterwards use the new worker and model facts; a
weld in progress keeps the worker and `TrackerOptions` it started with until its result, so
its windows and its `model_sha256` all come from one model. `wait_unused` tells the owner
when the old worker has no weld left.

Weld audio (`weld_audio` hook, for defect clips): each weld's model-rate audio is copied out
of the station history as it arrives and handed to the hook with the result. Memory is
bounded by the longest weld the segmenter allows (`max_weld_s`, plus one window): at most
stations x max_weld_s x model rate x 4 bytes (600 s at 16 kHz: 38 MB per station), and only
while a hook is set.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import structlog

from deploy.errors import WeldmonError
from deploy.segment.gate import GateParams, GateSegmenter
from deploy.segment.protocol import Boundary, Segmenter
from monitor.audio.blocks import AudioBlock
from monitor.events import EndReason, Event, SegmentationMode, Source, WeldResult
from monitor.pipeline.inference import InferenceWorker
from monitor.pipeline.resample import StationChunk, StationResampler
from monitor.pipeline.stations import ChannelMode, StationSplitter
from monitor.pipeline.tracker import TrackerOptions, WeldTracker
from monitor.pipeline.windower import SampleHistory, WeldWindower, Window
from monitor.segment.factory import SegmenterSpec, end_reason, max_weld_s, new_segmenter
from monitor.segment.triggers import DEFAULT_TRIGGER_MAX_WELD_S, TriggerSegmenter

HISTORY_MARGIN_S = 5.0  # history beyond the segmenter's look-back: covers the largest block
DEFAULT_MAX_IN_FLIGHT = 255  # windows awaiting inference before feed() waits

log = structlog.get_logger(__name__)

EventSink = Callable[[Event], None]
# (result, the weld's audio [start, end) at the model rate, its judged window probabilities)
# -> the result to emit (e.g. with clip_path set). Called on the event loop: must not block.
WeldAudioHook = Callable[[WeldResult, np.ndarray, list[float]], WeldResult]
# Seconds from a window's submission to its probability; called on the inference thread.
WindowLatencyHook = Callable[[float], None]


class PipelineError(WeldmonError):
    """The pipeline was asked for something it cannot do (e.g. a model of another rate)."""


@dataclass(frozen=True)
class PipelineSettings:
    """How blocks become welds (from the config, or replay's command line)."""

    stations: list[str]
    channel_mode: ChannelMode
    segmentation: SegmentationMode
    gate: GateParams = field(default_factory=GateParams)
    trigger_max_weld_s: float = DEFAULT_TRIGGER_MAX_WELD_S
    progress: bool = True
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    @property
    def segmenter(self) -> SegmenterSpec:
        """What each station's segmenter is built from."""
        return SegmenterSpec(self.segmentation, self.gate, self.trigger_max_weld_s)


@dataclass
class PipelineCounters:
    """Monotonic counters of one pipeline."""

    blocks: int = 0
    frames: int = 0
    dropped_frames: int = 0  # reported by the source (overflow, ring full)
    nonfinite_samples: int = 0  # NaN/Inf the source replaced by 0
    welds_started: int = 0
    results: int = 0
    windows: int = 0
    windows_failed: int = 0
    triggers_ignored: int = 0  # trigger for an unknown station or before audio flows
    weld_audio_truncated: int = 0  # welds whose kept audio hit the max_weld_s bound

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return asdict(self)


class _WeldAudio:
    """One weld's audio copied out of the station history as it arrives (for a clip)."""

    def __init__(self, start: int, limit: int) -> None:
        self.start = start
        self.limit = limit  # samples kept at most
        self.until = start  # one past the last sample copied
        self.parts: list[np.ndarray] = []
        self.truncated = False

    def extend(self, history: SampleHistory, upto: int) -> None:
        stop = min(upto, history.end_index, self.start + self.limit)
        if upto > self.start + self.limit:
            self.truncated = True
        if stop > self.until:
            self.parts.append(history.read(self.until, stop))
            self.until = stop

    def samples(self, end: int) -> np.ndarray:
        audio = np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
        return audio[: max(0, end - self.start)]


@dataclass
class _OpenWeld:
    tracker: WeldTracker
    windower: WeldWindower
    worker: InferenceWorker  # the model it started with judges all its windows
    audio: _WeldAudio | None = None


class _Station:
    """Everything one station owns: history, segmenter and its open weld."""

    def __init__(self, name: str, history: SampleHistory) -> None:
        self.name = name
        self.history = history
        self.segmenter: Segmenter | None = None
        self.epoch: int | None = None
        self.epoch_utc = 0.0
        self.source: Source | None = None
        self.weld: _OpenWeld | None = None


# Items the consumer task handles in order.
_WindowItem = tuple[Literal["window"], WeldTracker, Window, "Future[float] | None"]
_EventItem = tuple[Literal["event"], Event]
_EndItem = tuple[Literal["end"], _OpenWeld, int, EndReason]


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
    ) -> None:
        self.settings = settings
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
        self._stations = [_Station(name, SampleHistory(capacity)) for name in settings.stations]
        self._resampler = StationResampler(
            source_rate, self.model_rate, channels=self.splitter.resampler_channels
        )
        self._items: asyncio.Queue[_WindowItem | _EventItem | _EndItem] = asyncio.Queue(
            maxsize=max(1, settings.max_in_flight)
        )
        self._consumer: asyncio.Task[None] | None = None
        self._weld_audio = weld_audio
        self._on_window = on_window
        self._audio_limit = self._max_weld_samples()
        self._pending_since: collections.deque[float] = collections.deque()  # monotonic s
        self._users: dict[int, int] = {}  # id(worker) -> welds started on it, not yet ended
        self._released = asyncio.Event()
        self._epoch: int | None = None  # the stream epoch the stations are in, None between

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Pipeline:
        self._consumer = asyncio.create_task(self._consume(), name="weldmon-pipeline-consumer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain()
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer

    async def drain(self) -> None:
        """Wait until every window fed so far is judged and its events emitted."""
        self._check_consumer()
        await self._items.join()

    @property
    def source_rate(self) -> int:
        """The rate (Hz) of the blocks this pipeline accepts."""
        return self._source_rate

    @property
    def oldest_pending_at(self) -> float | None:
        """time.monotonic() when the oldest window still awaiting its probability was
        submitted; None when none waits. Safe to read from another thread."""
        try:
            return self._pending_since[0]
        except IndexError:
            return None

    def use_model(self, options: TrackerOptions, worker: InferenceWorker) -> None:
        """Welds that start from now on are judged by `worker` and carry `options`; welds in
        progress finish with the model they started with."""
        new = options.model
        if new.sample_rate != self.model_rate or new.chunk_samples != self.chunk:
            raise PipelineError(
                f"the new model takes {new.chunk_samples} samples at {new.sample_rate} Hz, "
                f"the pipeline runs {self.chunk} at {self.model_rate} Hz: restart to change that"
            )
        self.options = options
        self.worker = worker

    def welds_using(self, worker: InferenceWorker) -> int:
        """Welds started on `worker` whose result has not been emitted yet."""
        return self._users.get(id(worker), 0)

    async def wait_unused(self, worker: InferenceWorker) -> None:
        """Return once no weld started on `worker` is waiting for its result."""
        while self.welds_using(worker) > 0:
            self._released.clear()
            await self._released.wait()

    @property
    def open_welds(self) -> list[str]:
        """weld_ids of the welds in progress."""
        return [st.weld.tracker.weld_id for st in self._stations if st.weld is not None]

    # -- input -------------------------------------------------------------------------------

    async def feed(self, block: AudioBlock, source: Source) -> None:
        """Push one block through every station (waits while inference is saturated)."""
        self._check_consumer()
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
                await self.end_stream("device_lost", "device_lost")
            self._begin_epoch(block, source)
        befores = [st.weld for st in self._stations]
        for st, before in zip(self._stations, befores, strict=True):
            # The source refines frame 0's UTC over the epoch's first seconds; welds take the
            # latest estimate when they start.
            st.epoch_utc = block.epoch_utc
            if before is not None:
                self._flag_block(before, block)
        chunk = self._resampler.process(samples, block.start_frame, block.stream_epoch)
        await self._advance_all(self._station_chunks(chunk), self._default_end_reason())
        for st, before in zip(self._stations, befores, strict=True):
            if st.weld is not None and st.weld is not before:
                self._flag_block(st.weld, block)  # the weld began inside this block

    @staticmethod
    def _flag_block(weld: _OpenWeld, block: AudioBlock) -> None:
        if block.dropped_frames:
            weld.tracker.degrade("dropped_audio", block.dropped_frames)
        if block.nonfinite_samples:
            weld.tracker.degrade("nonfinite_samples")

    async def end_stream(self, end_reason: EndReason, degraded_reason: str | None = None) -> None:
        """The stream ended (file end, device lost, shutdown): flush the resamplers and close
        every open weld with `end_reason` (and `degraded_reason`, if any)."""
        if self._epoch is None:
            return
        tails = self._station_chunks(self._resampler.flush())
        for st, tail in zip(self._stations, tails, strict=True):
            await self._end_station(st, tail, end_reason, degraded_reason)
        self._epoch = None

    def push_trigger(self, station: str, state: Literal["start", "stop"], at_utc: float) -> bool:
        """A trigger message for `station` that arrived at `at_utc`; False if ignored."""
        for st in self._stations:
            if st.name == station and isinstance(st.segmenter, TriggerSegmenter):
                st.segmenter.push(state, round((at_utc - st.epoch_utc) * self.model_rate))
                return True
        self.counters.triggers_ignored += 1
        return False

    # -- internals ---------------------------------------------------------------------------

    def _check_consumer(self) -> None:
        task = self._consumer
        if task is None:
            raise RuntimeError("use the pipeline inside `async with`")
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    def _new_segmenter(self) -> Segmenter:
        return new_segmenter(self.settings.segmenter, self.model_rate)

    def _max_weld_samples(self) -> int:
        # one weld per file (inf): replay never keeps weld audio
        bound = max_weld_s(self.settings.segmenter) * self.model_rate + self.chunk
        return int(bound) if math.isfinite(bound) else 2**62

    def _default_end_reason(self) -> EndReason:
        return end_reason(self.settings.segmentation)

    def _begin_epoch(self, block: AudioBlock, source: Source) -> None:
        self._epoch = block.stream_epoch
        for st in self._stations:
            st.epoch_utc = block.epoch_utc
            st.source = source
            st.segmenter = self._new_segmenter()
            st.history.reset(round(block.start_frame * self.model_rate / self._source_rate))

    def _station_chunks(self, chunk: StationChunk) -> list[StationChunk]:
        """The resampler's chunk, one mono chunk per station."""
        if chunk.samples.ndim == 1:
            return [chunk]
        # One transposed copy: every station's row is then contiguous.
        rows = np.ascontiguousarray(chunk.samples.T)
        return [StationChunk(row, chunk.start_index, chunk.epoch) for row in rows]

    async def _end_station(
        self, st: _Station, tail: StationChunk, end_reason: EndReason, degraded_reason: str | None
    ) -> None:
        if st.segmenter is None:
            return
        if tail.samples.size:
            await self._advance(st, tail, self._default_end_reason())
        if st.weld is not None and degraded_reason is not None:
            st.weld.tracker.degrade(degraded_reason)
        for b in st.segmenter.close(st.history.end_index):
            await self._boundary(st, b, end_reason)
        st.segmenter = None

    async def _advance(self, st: _Station, chunk: StationChunk, end_reason: EndReason) -> None:
        assert st.segmenter is not None
        if chunk.samples.size == 0:
            return
        st.history.append(chunk.samples, chunk.start_index)
        forced_before = getattr(st.segmenter, "forced_ends", 0)
        # Every sample goes to the segmenter, digital silence included (the gate keeps it out
        # of its noise floor itself), so a live stream and a replayed file share one frame grid.
        boundaries = st.segmenter.process(chunk.samples, chunk.start_index)
        forced = getattr(st.segmenter, "forced_ends", 0) > forced_before
        await self._act(st, chunk, boundaries, forced, end_reason)

    async def _advance_all(self, chunks: list[StationChunk], end_reason: EndReason) -> None:
        """`_advance` for every station's chunk of one block, the gates' band powers of all
        stations measured in one call (same values: the meter sums each frame on its own)."""
        gates = [st.segmenter for st in self._stations]
        if len(gates) == 1 or not all(isinstance(g, GateSegmenter) for g in gates):
            for st, chunk in zip(self._stations, chunks, strict=True):
                await self._advance(st, chunk, end_reason)
            return
        if chunks[0].samples.size == 0:  # one resampler: every station's chunk is as long
            return
        frames = []
        for st, chunk, gate in zip(self._stations, chunks, gates, strict=True):
            st.history.append(chunk.samples, chunk.start_index)
            frames.append(gate.take_frames(chunk.samples, chunk.start_index))
        meter = gates[0].meter
        if all(g.meter is meter for g in gates) and len({f.size for f in frames}) == 1:
            # Stations share a frame grid (one epoch, one clock), so their frame counts match.
            powers = np.split(meter.power(np.concatenate(frames)), len(frames))
        else:
            powers = [g.meter.power(f) for g, f in zip(gates, frames, strict=True)]
        for st, chunk, gate, power in zip(self._stations, chunks, gates, powers, strict=True):
            forced_before = gate.forced_ends
            boundaries = gate.decide_powers(power)
            forced = gate.forced_ends > forced_before
            await self._act(st, chunk, boundaries, forced, end_reason)

    async def _act(
        self,
        st: _Station,
        chunk: StationChunk,
        boundaries: list[Boundary],
        forced: bool,
        end_reason: EndReason,
    ) -> None:
        """Open and close welds at `boundaries` and cut the open weld's windows."""
        for b in boundaries:
            reason: EndReason = "max_length" if forced and b.kind == "end" else end_reason
            await self._boundary(st, b, reason)
        if st.weld is not None:
            if st.weld.audio is not None:
                st.weld.audio.extend(st.history, chunk.end_index)
            await self._submit(st.weld, st.weld.windower.windows_until(st.history, chunk.end_index))

    async def _boundary(self, st: _Station, b: Boundary, end_reason: EndReason) -> None:
        if b.kind == "start":
            if st.weld is not None:  # segmenters never do this; be loud if one does
                raise RuntimeError(f"{st.name}: start at {b.index} while a weld is open")
            assert st.source is not None
            tracker = WeldTracker(self.options, st.name, st.source, b.index, st.epoch_utc)
            audio = None
            if self._weld_audio is not None:
                audio = _WeldAudio(b.index, self._audio_limit)
                audio.extend(st.history, st.history.end_index)
            st.weld = _OpenWeld(tracker, WeldWindower(b.index, self.chunk), self.worker, audio)
            self._users[id(self.worker)] = self._users.get(id(self.worker), 0) + 1
            self.counters.welds_started += 1
            await self._items.put(("event", tracker.start_event()))
            return
        weld = st.weld
        if weld is None:
            raise RuntimeError(f"{st.name}: end at {b.index} without an open weld")
        await self._submit(weld, weld.windower.windows_until(st.history, b.index))
        if weld.audio is not None:
            weld.audio.extend(st.history, b.index)
        await self._items.put(("end", weld, b.index, end_reason))
        st.weld = None

    async def _submit(self, weld: _OpenWeld, windows: list[Window]) -> None:
        for w in windows:
            future: Future[float] | None
            submitted = time.monotonic()
            try:
                future = weld.worker.submit(w.samples)
            except Exception as exc:  # overload or a stopped worker: the window is lost, counted
                log.error("window_not_judged", weld_id=weld.tracker.weld_id, error=str(exc))
                future = None
            if future is not None and self._on_window is not None:
                future.add_done_callback(self._latency_callback(submitted))
            self.counters.windows += 1
            self._pending_since.append(submitted)
            await self._items.put(("window", weld.tracker, w, future))

    def _latency_callback(self, submitted: float) -> Callable[[Future[float]], None]:
        hook = self._on_window
        assert hook is not None

        def done(future: Future[float]) -> None:
            if not future.cancelled() and future.exception() is None:
                hook(time.monotonic() - submitted)

        return done

    async def _consume(self) -> None:
        while True:
            item = await self._items.get()
            try:
                await self._handle(item)
            finally:
                self._items.task_done()

    async def _handle(self, item: _WindowItem | _EventItem | _EndItem) -> None:
        if item[0] == "event":
            self.emit(item[1])
        elif item[0] == "window":
            _, tracker, window, future = item
            try:
                prob = await self._probability(tracker, future)
            finally:
                self._pending_since.popleft()
            for event in tracker.add_window(window.index, prob, window.end, self.settings.progress):
                self.emit(event)
        else:
            _, weld, end_index, reason = item
            self.counters.results += 1
            try:
                self.emit(self._with_audio(weld, end_index, reason))
            finally:
                key = id(weld.worker)
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key]
                self._released.set()

    def _with_audio(self, weld: _OpenWeld, end_index: int, reason: EndReason) -> WeldResult:
        tracker = weld.tracker
        result = tracker.result(end_index, reason)
        if weld.audio is None or self._weld_audio is None:
            return result
        if weld.audio.truncated:
            self.counters.weld_audio_truncated += 1
            log.warning("weld_audio_truncated", weld_id=tracker.weld_id, kept=weld.audio.limit)
        samples = weld.audio.samples(end_index)
        if samples.size == 0:
            return result
        whole = weld.windower.whole_windows(end_index)
        judged = [p for p in tracker.probs[:whole] if p == p]  # NaN: inference failed
        return self._weld_audio(result, samples, judged)

    async def _probability(
        self, tracker: WeldTracker, future: Future[float] | None
    ) -> float | None:
        if future is None:
            self.counters.windows_failed += 1
            return None
        try:
            prob = await asyncio.wrap_future(future)
        except Exception as exc:  # the worker already logged it; the weld says it is degraded
            self.counters.windows_failed += 1
            log.warning("window_failed", weld_id=tracker.weld_id, error=str(exc))
            return None
        return prob if math.isfinite(prob) else None
