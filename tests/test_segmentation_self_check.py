"""The segmentation self-check (issue 20): where process data covers a weld an audio mode
cut, its result's process record says how far the audio's start and end lie from the arc
current's, and the daemon's metrics count them (`weldmon_segmentation_boundary_error_seconds`,
`weldmon_segmentation_boundary_unmatched_total`). Replay feeds each run's sensor log as the
process data, through the pipeline the daemon runs; the metrics are recorded from the
results as the daemon records them (`monitor.ops.status.record_event`)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deploy.loader import DeployModel, load_artifact
from deploy.segment.boundary_check import boundary_errors, matching_arc, sample_arcs
from deploy.segment.modes import SegmentationMode
from deploy.segment.process import ProcessSample
from deploy.sensorlog import read_sensor_log
from monitor.audio.blocks import AudioBlock
from monitor.config import MonitorConfig, parse_config
from monitor.events import EndReason, Event, Source, WeldResult
from monitor.events.inbound import ProcessReading
from monitor.ops.metrics import BOUNDARY_ERROR_BUCKETS_S, Metrics
from monitor.ops.status import record_event
from monitor.pipeline.core import Pipeline
from monitor.pipeline.inference import InferenceWorker
from monitor.pipeline.settings import PipelineSettings
from monitor.pipeline.tracker import ModelInfo, TrackerOptions
from monitor.replay import replay_files
from tests.support.arc_truth import RATE_HZ, recording_with_truth
from tests.support.data import Recording
from tests.support.factory_floor import attenuated

TOL_S = 0.5
STAMP = "%m/%d/%Y %H:%M:%S.%f"


@pytest.fixture(scope="module")
def model(compat_artifact: Path) -> DeployModel:
    return load_artifact(compat_artifact)


def _config(model: Path, state: Path) -> MonitorConfig:
    data = {"model": {"path": str(model)}, "state_dir": str(state), "mqtt": {"enabled": False}}
    return parse_config(data)


def _replay(
    cfg: MonitorConfig, model: DeployModel, files: list[Path], mode: str
) -> list[WeldResult]:
    out = io.StringIO()
    asyncio.run(replay_files(cfg, model, files, segmentation=mode, out=out, progress=False))  # type: ignore[arg-type]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["kind"] for r in lines] == ["weld_result"] * len(lines)
    return [WeldResult.model_validate(r) for r in lines]


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"weldmon_{name}", labels) or 0.0


@pytest.mark.real_data
def test_each_crackle_weld_carries_its_errors_against_the_current_and_the_histogram_counts_them(
    model: DeployModel, compat_artifact: Path, recordings: list[Recording], tmp_path: Path
) -> None:
    chosen = recordings[::5]
    results = _replay(
        _config(compat_artifact, tmp_path), model, [r.flac for r in chosen], "crackle"
    )
    assert len(results) == len(chosen)
    metrics = Metrics()
    metrics.declare_stations(["station1"], ["station1"])
    for rec, result in zip(chosen, results, strict=True):
        _, truth = recording_with_truth(rec)
        process, source = result.process, result.source
        assert process is not None and process.arc_matched is True
        assert source.start_s is not None and source.end_s is not None
        # The errors are the audio's boundaries minus the sensor log's arc.
        assert process.start_error_s == pytest.approx(source.start_s - truth.start_s, abs=0.02)
        assert process.end_error_s == pytest.approx(source.end_s - truth.end_s, abs=0.02)
        assert abs(process.start_error_s) <= TOL_S and abs(process.end_error_s) <= TOL_S
        record_event(metrics, result)
    for edge in ("start", "end"):
        count = _metric(
            metrics, "segmentation_boundary_error_seconds_count", station="station1", edge=edge
        )
        assert count == len(chosen)
        # Signed buckets (prometheus_client exports no _sum for them): each holds the errors
        # at or under its bound.
        errors = [getattr(r.process, f"{edge}_error_s") for r in results]
        for bound in BOUNDARY_ERROR_BUCKETS_S:
            held = _metric(
                metrics,
                "segmentation_boundary_error_seconds_bucket",
                station="station1",
                edge=edge,
                le=str(bound),
            )
            assert held == sum(e <= bound for e in errors), (edge, bound)
    assert _metric(metrics, "segmentation_boundary_unmatched_total", station="station1") == 0


@pytest.mark.real_data
def test_current_mode_makes_no_self_check(
    model: DeployModel, compat_artifact: Path, recordings: list[Recording], tmp_path: Path
) -> None:
    (result,) = _replay(_config(compat_artifact, tmp_path), model, [recordings[0].flac], "current")
    assert result.process is not None
    assert result.process.arc_matched is None and result.process.end_error_s is None


@pytest.mark.real_data
def test_a_fading_tail_shows_as_an_early_end_in_the_histogram(
    model: DeployModel, compat_artifact: Path, recordings: list[Recording], tmp_path: Path
) -> None:
    """The field report's early end (the arc 12 dB quieter for its last 5 s while the
    current runs on) is what the self-check is for: the end error shows it."""
    rec = sorted(recordings, key=lambda r: r.run_id)[0]
    samples, truth = recording_with_truth(rec)
    faded = tmp_path / f"{rec.flac.stem}.flac"
    sf.write(
        faded, attenuated(samples, RATE_HZ, (truth.end_s - 5.0, truth.end_s + 0.5), 12.0), RATE_HZ
    )
    faded.with_suffix(".csv").write_bytes(rec.sensor_csv.read_bytes())
    (result,) = _replay(_config(compat_artifact, tmp_path), model, [faded], "crackle")
    process = result.process
    assert process is not None and process.arc_matched is True
    assert result.source.end_s is not None
    assert process.end_error_s == pytest.approx(result.source.end_s - truth.end_s, abs=0.1)
    assert process.end_error_s < -2.0  # the weld ended seconds before the current
    metrics = Metrics()
    record_event(metrics, result)
    early = _metric(
        metrics,
        "segmentation_boundary_error_seconds_bucket",
        station="station1",
        edge="end",
        le="-2.0",
    )
    assert early == 1


def _with_current_off_after(log: Path, out: Path, extra_s: float) -> None:
    """``log`` followed by ``extra_s`` more of its own rows (10 rows/s) with no current."""
    with log.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], [r for r in rows[1:] if any(c.strip() for c in r)]
    names = [h.strip() for h in header]
    di, ti, ci = (names.index(c) for c in ("Date", "Time", "Primary Weld Current"))
    last = datetime.strptime(f"{body[-1][di]} {body[-1][ti]}", STAMP)
    for k in range(1, round(extra_s * 10) + 1):
        row = list(body[-1])
        t = last + timedelta(seconds=k / 10)
        row[di], row[ti] = t.strftime("%m/%d/%Y"), t.strftime("%H:%M:%S.%f")[:-3]
        row[ci] = "0.00"
        body.append(row)
    with out.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *body])


@pytest.mark.real_data
def test_a_weld_the_current_never_burned_counts_as_unmatched(
    model: DeployModel, compat_artifact: Path, recordings: list[Recording], tmp_path: Path
) -> None:
    """Two runs back to back in one file, the first run's log extended with the current off:
    the second weld is heard (another cell's, as far as this welder knows) while this
    welder's current stays off."""
    ordered = sorted(recordings, key=lambda r: r.run_id)
    first, second = ordered[0], ordered[1]
    a, _ = recording_with_truth(first)
    b, _ = recording_with_truth(second)
    both = tmp_path / "two_runs.flac"
    sf.write(both, np.concatenate((a, b)), RATE_HZ)
    _with_current_off_after(first.sensor_csv, both.with_suffix(".csv"), b.size / RATE_HZ)
    results = _replay(_config(compat_artifact, tmp_path), model, [both], "crackle")
    assert len(results) == 2
    own, other = (r.process for r in results)
    assert own is not None and own.arc_matched is True
    assert other is not None and other.arc_matched is False
    assert other.start_error_s is None and other.end_error_s is None
    metrics = Metrics()
    for result in results:
        record_event(metrics, result)
    assert _metric(metrics, "segmentation_boundary_unmatched_total", station="station1") == 1
    count = _metric(
        metrics, "segmentation_boundary_error_seconds_count", station="station1", edge="end"
    )
    assert count == 1


@pytest.mark.real_data
def test_live_process_data_arriving_with_the_audio_checks_each_crackle_weld(
    compat_artifact: Path, recordings: list[Recording]
) -> None:
    """The daemon's case: readings come in as the audio goes on (each one as soon as its
    block of audio has arrived, as a gateway publishes them), through the pipeline's
    `push_process` (what the MQTT handler calls). The crackle end is decided after the
    current's end has arrived, so the live errors equal the sensor log's."""
    rec = sorted(recordings, key=lambda r: r.run_id)[2]
    audio, truth = recording_with_truth(rec)
    log = read_sensor_log(rec.sensor_csv)
    epoch = 1_760_000_000.0
    stamps = [epoch + float(t) + truth.offset_s for t in log.time_s]
    readings = [
        ProcessReading(t=datetime.fromtimestamp(s, UTC), current_a=float(a))
        for s, a in zip(stamps, log.current_a, strict=True)
    ]
    model = load_artifact(compat_artifact)
    mode = SegmentationMode.CRACKLE
    settings = PipelineSettings(["cell"], "mix", mode, max_in_flight=64)
    options = TrackerOptions(ModelInfo.of(model), "0.1.0", mode)
    events: list[Event] = []

    async def main() -> None:
        block = RATE_HZ // 10
        source = Source(type="device", name="test")
        sent = 0
        with InferenceWorker(model, 16, 64) as worker:
            async with Pipeline(settings, options, worker, events.append, RATE_HZ) as pipeline:
                for i in range(0, audio.size, block):
                    await pipeline.feed(
                        AudioBlock(audio[i : i + block, None], i, RATE_HZ, 1, epoch), source
                    )
                    now = epoch + (i + block) / RATE_HZ
                    due = sum(1 for s in stamps[sent:] if s <= now)
                    if due:
                        pipeline.push_process("cell", readings[sent : sent + due])
                        sent += due
                await pipeline.end_stream(EndReason.SHUTDOWN)

    asyncio.run(main())
    [result] = [e for e in events if isinstance(e, WeldResult)]
    assert result.end_reason == "crackle"
    process = result.process
    assert process is not None and process.arc_matched is True
    started = result.started_at.timestamp() - epoch
    ended = result.ended_at.timestamp() - epoch
    assert process.start_error_s == pytest.approx(started - truth.start_s, abs=0.06)
    assert process.end_error_s == pytest.approx(ended - truth.end_s, abs=0.06)
    assert abs(process.start_error_s) <= TOL_S and abs(process.end_error_s) <= TOL_S


def test_a_weld_is_matched_to_the_arc_it_overlaps_most() -> None:
    arcs = [(0.0, 10.0), (12.0, 40.0), (50.0, 60.0)]
    # A weld carried on by a neighbour spans two arcs: the one it overlaps most is its own.
    errors = boundary_errors((9.0, 45.0), arcs)
    assert errors is not None
    assert (errors.arc_start_s, errors.arc_end_s) == (12.0, 40.0)
    assert errors.start_error_s == pytest.approx(-3.0) and errors.end_error_s == pytest.approx(5.0)
    assert boundary_errors((41.0, 49.0), arcs) is None  # between arcs: unmatched
    assert boundary_errors((10.0, 12.0), arcs) is None  # touching is no overlap
    # Equal overlaps: the earlier arc.
    assert matching_arc((8.0, 14.0), [(0.0, 10.0), (12.0, 20.0)]) == (0.0, 10.0)


def test_process_samples_give_the_sensor_logs_arc_spans() -> None:
    """The live spans follow the sensor log's rule: above 5 A, gaps up to 1 s bridged."""
    current = [0.0] * 10 + [150.0] * 30 + [0.0] * 8 + [150.0] * 20 + [0.0] * 15 + [150.0] * 5
    samples = [ProcessSample(k * 1600, a) for k, a in enumerate(current)]  # 10/s at 16 kHz
    # on 1.0-3.9 s and 4.8-6.7 s (a 0.9 s gap: bridged), then 8.3-8.7 s after a 1.6 s gap
    spans = sample_arcs(samples, RATE_HZ)
    assert [x for span in spans for x in span] == pytest.approx([1.0, 6.7, 8.3, 8.7])
