"""monitor.pipeline.core with the real inference worker and model, fed synthetic blocks: trigger
mode, shutdown, device loss and dropped audio end welds the way the events promise."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.audio import read_recording
from deploy.loader import DeployModel, load_artifact
from deploy.segment.gate import segment_recording
from monitor.audio.blocks import AudioBlock
from monitor.events import Event, SegmentationMode, Source, WeldResult, WeldStart
from monitor.pipeline.core import Pipeline
from monitor.pipeline.inference import InferenceWorker
from monitor.pipeline.settings import PipelineSettings
from monitor.pipeline.tracker import ModelInfo, TrackerOptions

torch.set_num_threads(1)
RATE = 16_000
EPOCH_UTC = 1_700_000_000.0
SOURCE = Source(type="device", name="synthetic")


@pytest.fixture(scope="module")
def model(compat_artifact: Path) -> DeployModel:
    return load_artifact(compat_artifact)


@pytest.fixture(scope="module")
def worker(model: DeployModel) -> Iterator[InferenceWorker]:
    with InferenceWorker(model, max_batch_windows=16, queue_windows=64) as w:
        yield w


def _blocks(seconds: float, *, epoch: int = 1, dropped_at: int | None = None):
    rng = np.random.default_rng(epoch)
    n = round(0.1 * RATE)
    for i in range(round(seconds / 0.1)):
        samples = (rng.standard_normal((n, 1)) * 0.05).astype(np.float32)
        dropped = 0 if dropped_at != i else 100
        yield AudioBlock(samples, i * n, RATE, epoch, EPOCH_UTC, dropped_frames=dropped)


def _run(model: DeployModel, worker: InferenceWorker, mode: SegmentationMode, script) -> list:
    events: list[Event] = []
    settings = PipelineSettings(["cell"], "mix", mode, max_in_flight=32)
    options = TrackerOptions(ModelInfo.of(model), "0.1.0", mode)

    async def main() -> None:
        async with Pipeline(settings, options, worker, events.append, RATE) as pipeline:
            await script(pipeline)

    asyncio.run(main())
    return events


def _results(events: list[Event]) -> list[WeldResult]:
    return [e for e in events if isinstance(e, WeldResult)]


def test_trigger_mode_weld_spans_the_trigger_times_on_the_sample_clock(
    model: DeployModel, worker: InferenceWorker
) -> None:
    async def script(p: Pipeline) -> None:
        blocks = list(_blocks(6.0))
        await p.feed(blocks[0], SOURCE)
        p.push_trigger("cell", "start", EPOCH_UTC + 1.0)
        p.push_trigger("cell", "stop", EPOCH_UTC + 3.5)
        for b in blocks[1:]:
            await p.feed(b, SOURCE)
        await p.end_stream("shutdown", "interrupted")

    (result,) = _results(_run(model, worker, "trigger", script))
    assert result.started_at.timestamp() == pytest.approx(EPOCH_UTC + 1.0, abs=1e-3)
    assert result.duration_s == pytest.approx(2.5)
    assert result.n_windows == 2
    assert result.end_reason == "trigger" and not result.degraded


def test_trigger_for_an_unknown_station_is_ignored_and_counted(
    model: DeployModel, worker: InferenceWorker
) -> None:
    counted = []

    async def script(p: Pipeline) -> None:
        await p.feed(next(_blocks(0.1)), SOURCE)
        assert not p.push_trigger("other", "start", EPOCH_UTC)
        counted.append(p.counts()["triggers_ignored_unknown_station"])

    assert _results(_run(model, worker, "trigger", script)) == []
    assert counted == [1]


def test_shutdown_closes_the_open_weld_as_interrupted(
    model: DeployModel, worker: InferenceWorker
) -> None:
    async def script(p: Pipeline) -> None:
        for b in _blocks(2.5):
            await p.feed(b, SOURCE)
        await p.end_stream("shutdown", "interrupted")

    events = _run(model, worker, "file", script)
    (result,) = _results(events)
    assert isinstance(events[0], WeldStart)
    assert result.end_reason == "shutdown"
    assert result.degraded_reasons == ["interrupted"]
    assert result.n_windows == 2


def test_a_new_stream_epoch_closes_open_welds_as_device_lost(
    model: DeployModel, worker: InferenceWorker
) -> None:
    async def script(p: Pipeline) -> None:
        for b in _blocks(1.5, epoch=1):
            await p.feed(b, SOURCE)
        for b in _blocks(1.2, epoch=2):
            await p.feed(b, SOURCE)
        await p.end_stream("file_end")

    first, second = _results(_run(model, worker, "file", script))
    assert (first.end_reason, first.degraded_reasons) == ("device_lost", ["device_lost"])
    assert (second.end_reason, second.degraded) == ("file_end", False)


def test_dropped_frames_during_a_weld_are_reported_on_its_result(
    model: DeployModel, worker: InferenceWorker
) -> None:
    async def script(p: Pipeline) -> None:
        for b in _blocks(2.0, dropped_at=5):
            await p.feed(b, SOURCE)
        await p.end_stream("file_end")

    (result,) = _results(_run(model, worker, "file", script))
    assert result.degraded_reasons == ["dropped_audio"]
    assert result.dropped_frames == 100


@pytest.mark.real_data
def test_leading_digital_silence_keeps_the_gate_on_the_whole_streams_frame_grid(
    model: DeployModel, worker: InferenceWorker, recordings: list
) -> None:
    # A stream that delivers exact zeros before the sound starts (a null sink before
    # playback), for a span that is not a whole number of gate frames: the pipeline's welds
    # must be the offline gate's over the very same array, zeros included, sample for sample.
    audio = read_recording(recordings[4].flac, RATE).samples[0]
    stream = np.concatenate((np.zeros(round(1.33 * RATE), np.float32), audio))
    block = round(0.07 * RATE)  # not a whole number of 50 ms gate frames

    async def script(pipeline: Pipeline) -> None:
        for start in range(0, stream.size, block):
            part = stream[start : start + block, None]
            await pipeline.feed(AudioBlock(part, start, RATE, 1, EPOCH_UTC), SOURCE)
        await pipeline.end_stream("shutdown")

    events = _run(model, worker, "gate", script)
    starts = [e for e in events if isinstance(e, WeldStart)]
    offline = segment_recording(stream, RATE)
    assert offline, "the recording's arc must be found offline"
    streamed = [(round((r.started_at.timestamp() - EPOCH_UTC) * RATE)) for r in starts]
    assert streamed == [a for a, _ in offline]
    ends = [round(r.duration_s * RATE) for r in _results(events)]
    assert ends == [b - a for a, b in offline]
