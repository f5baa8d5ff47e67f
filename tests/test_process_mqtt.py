"""The welder's process data over a real Mosquitto broker into a running pipeline in current
mode: the daemon's own publisher and command router, a real recording's audio, and its sensor
log published as process JSON. Bad readings are counted and skipped, a malformed payload is
reported as such, a retained message is ignored."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from deploy.loader import DeployModel, load_artifact
from deploy.segment.modes import SegmentationMode
from deploy.sensorlog import read_sensor_log
from monitor.audio.blocks import AudioBlock
from monitor.events import EndReason, Event, Source, WeldResult, format_utc, status_payload_factory
from monitor.pipeline.core import Pipeline
from monitor.pipeline.inference import InferenceWorker
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

RATE = 16_000
EPOCH_UTC = 1_760_000_000.0  # UTC of the stream's frame 0
STATION = "cell"
TOPIC = f"weldmon/{STATION}/process"
WAIT_S = 30.0
CURRENT_TOL_S = 0.3


async def until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll (without blocking the loop) until condition() holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


def stamp(posix_s: float) -> str:
    return format_utc(datetime.fromtimestamp(posix_s, UTC))


def readings(rec: Recording, offset_s: float) -> list[dict]:
    """The run's sensor log as process readings timed on the stream's UTC clock."""
    log = read_sensor_log(rec.sensor_csv)
    assert log.voltage_v is not None and log.wire_consumed_m is not None
    return [
        {
            "t": stamp(EPOCH_UTC + t + offset_s),
            "current_a": float(a),
            "voltage_v": float(v),
            "wire_consumed_m": float(w),
            "gas_flow": 12.0,  # a field weldmon does not know: ignored
        }
        for t, a, v, w in zip(
            log.time_s, log.current_a, log.voltage_v, log.wire_consumed_m, strict=True
        )
    ]


@pytest.mark.real_data
def test_current_mode_cuts_the_weld_by_process_data_sent_over_mqtt(
    mosquitto: MosquittoBroker,
    mqtt_subscriber: Callable[..., MqttCollector],
    recordings: list[Recording],
    compat_artifact: Path,
    tmp_path: Path,
) -> None:
    rec = recordings[8]
    audio, truth = recording_with_truth(rec)
    good = readings(rec, truth.offset_s)
    sender = mqtt_subscriber(mosquitto, ["weldmon/none"])
    # Retained before the monitor subscribes: the broker hands it over at every subscribe.
    # Acted on, it would open a phantom weld at 1-4 s.
    phantom = [{"t": stamp(EPOCH_UTC + 1 + k / 10), "current_a": 200.0} for k in range(30)]
    sender.publish(TOPIC, json.dumps({"samples": phantom}).encode(), retain=True)

    model: DeployModel = load_artifact(compat_artifact)
    mode = SegmentationMode.CURRENT
    settings = PipelineSettings([STATION], "mix", mode, max_in_flight=64)
    options = TrackerOptions(ModelInfo.of(model), "0.1.0", mode)
    events: list[Event] = []
    malformed: list[str] = []

    async def main() -> tuple[dict[str, int], int]:
        block = RATE // 10
        blocks = [
            AudioBlock(audio[i : i + block, None], i, RATE, 1, EPOCH_UTC)
            for i in range(0, audio.size, block)
        ]
        with InferenceWorker(model, 16, 64) as worker:
            async with Pipeline(settings, options, worker, events.append, RATE) as pipeline:
                source = Source(type="device", name="test")
                await pipeline.feed(blocks[0], source)  # the stream (and its clock) begins
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
                mqtt = MqttConfig(
                    host=mosquitto.host, port=mosquitto.port, client_id="wm-process-test"
                )
                publisher = MqttPublisher(
                    mqtt,
                    Outbox(tmp_path / "outbox.sqlite3", 100),
                    status_payload=status_payload_factory("0.1.0", None, "wm-process-test"),
                    on_message=router,
                    subscriptions=router.subscriptions,
                )
                async with publisher:
                    await until(lambda: publisher.counters.ignored_retained == 1)
                    for k in range(0, len(good), 10):  # a gateway's batches of ten
                        batch = json.dumps({"samples": good[k : k + 10]}).encode()
                        await asyncio.to_thread(sender.publish, TOPIC, batch)
                    bad = [
                        {"t": stamp(EPOCH_UTC + 60), "current_a": "lots"},  # not a number
                        {"t": "2026-01-01T00:00:00", "current_a": 5.0},  # no time zone
                        {"t": stamp(EPOCH_UTC + 61), "current_a": 1e9},  # out of range
                        {"t": stamp(EPOCH_UTC + 2), "current_a": 1.0},  # older than the last
                    ]
                    await asyncio.to_thread(
                        sender.publish, TOPIC, json.dumps({"samples": bad}).encode()
                    )
                    await asyncio.to_thread(sender.publish, TOPIC, b"not json")
                    await until(lambda: pipeline.counts()["process_samples_bad"] == 4 and malformed)
                    for b in blocks[1:]:
                        await pipeline.feed(b, source)
                    await pipeline.end_stream(EndReason.SHUTDOWN)
                    retained = publisher.counters.ignored_retained
                return pipeline.counts(), retained

    counts, retained = asyncio.run(main())
    sender.publish(TOPIC, b"", retain=True)  # clear the retained message
    assert retained == 1
    assert malformed == ["process"]
    assert counts["process_samples"] == len(good)
    assert counts["process_samples_bad"] == 4
    [result] = [e for e in events if isinstance(e, WeldResult)]
    assert result.end_reason == "current"
    assert result.started_at.timestamp() - EPOCH_UTC == pytest.approx(
        truth.start_s, abs=CURRENT_TOL_S
    )
    assert result.ended_at.timestamp() - EPOCH_UTC == pytest.approx(truth.end_s, abs=CURRENT_TOL_S)
    assert result.process is not None and result.dropouts is not None
    on = [r["current_a"] for r in good if r["current_a"] > 5.0]
    assert result.process.current_mean_a == pytest.approx(float(np.mean(on)), rel=0.05)
    assert result.process.arc_s == pytest.approx(truth.end_s - truth.start_s, rel=0.05)
