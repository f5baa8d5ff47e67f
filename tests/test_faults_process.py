"""Process data that must not switch a station off (issue 22), over a real Mosquitto broker
into a running pipeline in current mode, with real recordings' audio and sensor logs: a
reading dated an hour ahead is refused and counted instead of making every real reading after
it "not later than the last"; a reading whose time is out of range costs itself, not its
batch."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import structlog
from structlog.testing import capture_logs

from deploy.loader import load_artifact
from deploy.segment.modes import SegmentationMode
from monitor.audio.blocks import AudioBlock
from monitor.events import EndReason, Event, Source, WeldResult, status_payload_factory
from monitor.pipeline.core import Pipeline
from monitor.pipeline.inference import InferenceWorker
from monitor.pipeline.process_feed import MAX_AHEAD_S
from monitor.pipeline.settings import PipelineSettings
from monitor.pipeline.tracker import ModelInfo, TrackerOptions
from monitor.publish.commands import CommandHandlers, CommandRouter
from monitor.publish.homeassistant import HomeAssistantConfig
from monitor.publish.outbox import Outbox
from monitor.publish.publisher import MqttPublisher
from monitor.publish.settings import MqttConfig
from tests.support.arc_truth import recording_with_truth
from tests.support.broker import MosquittoBroker, MqttCollector
from tests.support.data import Recording
from tests.test_process_mqtt import EPOCH_UTC, RATE, readings, stamp, until

STATION = "cell"
TOPIC = f"weldmon/{STATION}/process"
CURRENT_TOL_S = 0.3
WELDS = (6, 7, 8)  # two 25 s runs and a 38 s one, one after the other on one stream


@pytest.fixture
def structlog_defaults() -> None:
    """structlog's defaults for this test: an earlier test that ran the daemon's
    `configure_logging` in-process (level `error`, say) leaves a level filter that would drop
    the warning this test captures (it failed that way in full runs, never alone)."""
    structlog.reset_defaults()


@pytest.mark.real_data
@pytest.mark.usefixtures("structlog_defaults")
def test_a_reading_from_the_future_does_not_switch_the_station_off(
    mosquitto: MosquittoBroker,
    mqtt_subscriber: Callable[..., MqttCollector],
    recordings: list[Recording],
    compat_artifact: Path,
    tmp_path: Path,
) -> None:
    audio_parts, starts, truths, good = [], [], [], []
    at = 0.0
    for k in WELDS:
        audio, truth = recording_with_truth(recordings[k])
        audio_parts.append(audio)
        starts.append(at)
        truths.append(truth)
        good.append(readings(recordings[k], at + truth.offset_s))
        at += audio.size / RATE
    audio = np.concatenate(audio_parts)
    sender = mqtt_subscriber(mosquitto, ["weldmon/none"])
    # Retained, so the broker hands it over when the monitor subscribes: proof it listens.
    sender.publish(TOPIC, json.dumps({"t": stamp(EPOCH_UTC), "current_a": 0}).encode(), retain=True)
    model = load_artifact(compat_artifact)
    mode = SegmentationMode.CURRENT
    settings = PipelineSettings([STATION], "mix", mode, max_in_flight=64)
    options = TrackerOptions(ModelInfo.of(model), "0.1.0", mode)
    events: list[Event] = []
    malformed: list[str] = []
    future = {"t": stamp(time.time() + 3600), "current_a": 0}
    # In UTC past the year 9999: not a datetime Python can hold.
    out_of_range = {"t": "9999-12-31T23:59:59-05:00", "current_a": 0}

    async def main() -> dict[str, int]:
        block = RATE // 10
        blocks = [
            AudioBlock(audio[i : i + block, None], i, RATE, 1, EPOCH_UTC)
            for i in range(0, audio.size, block)
        ]
        with InferenceWorker(model, 16, 64) as worker:
            async with Pipeline(settings, options, worker, events.append, RATE) as pipeline:
                source = Source(type="device", name="test")
                await pipeline.feed(blocks[0], source)
                handlers = CommandHandlers(
                    reload=lambda origin: None,
                    trigger=lambda station, state, at, context: False,
                    part=lambda station, context: False,
                    homeassistant_birth=lambda: None,
                    malformed=malformed.append,
                    process=pipeline.push_process,
                )
                router = CommandRouter(
                    "weldmon",
                    HomeAssistantConfig(),
                    [STATION],
                    handlers,
                    triggers=False,
                    process=True,
                )
                mqtt = MqttConfig(host=mosquitto.host, port=mosquitto.port, client_id="wm-future")
                publisher = MqttPublisher(
                    mqtt,
                    Outbox(tmp_path / "outbox.sqlite3", 100),
                    status_payload=status_payload_factory("0.1.0", None, "wm-future"),
                    on_message=router,
                    subscriptions=router.subscriptions,
                )
                async with publisher:
                    await until(lambda: publisher.counters.ignored_retained == 1)  # subscribed
                    payload = json.dumps(future).encode()
                    await asyncio.to_thread(sender.publish, TOPIC, payload)
                    await until(lambda: pipeline.counts()["process_samples_ahead"] == 1)
                    batches = [r[k : k + 10] for r in good for k in range(0, len(r), 10)]
                    batches[0] = [out_of_range, *batches[0]]  # costs itself, not the batch
                    for batch in batches:
                        payload = json.dumps({"samples": batch}).encode()
                        await asyncio.to_thread(sender.publish, TOPIC, payload)
                    total = sum(len(r) for r in good)
                    await until(lambda: pipeline.counts()["process_samples"] == total)
                    for b in blocks[1:]:
                        await pipeline.feed(b, source)
                    await pipeline.end_stream(EndReason.SHUTDOWN)
                return pipeline.counts()

    with capture_logs() as logs:
        counts = asyncio.run(main())
    sender.publish(TOPIC, b"", retain=True)  # clear the retained message
    assert malformed == []
    assert counts["process_samples_ahead"] == 1
    assert counts["process_samples_bad"] == 1  # the out-of-range time, alone
    [ahead_line] = [e for e in logs if e["event"] == "process_sample_ahead"]
    assert ahead_line["station"] == STATION and ahead_line["limit_s"] == MAX_AHEAD_S
    results = [e for e in events if isinstance(e, WeldResult)]
    assert len(results) == len(WELDS), "every weld after the future reading is detected"
    for result, start, truth in zip(results, starts, truths, strict=True):
        assert result.end_reason == "current"
        began = result.started_at.timestamp() - EPOCH_UTC - start
        ended = result.ended_at.timestamp() - EPOCH_UTC - start
        assert began == pytest.approx(truth.start_s, abs=CURRENT_TOL_S)
        assert ended == pytest.approx(truth.end_s, abs=CURRENT_TOL_S)
