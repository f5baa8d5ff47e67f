"""Part traceability: a trigger's start, or a part announcement on ``{prefix}/{station}/part``,
names the part; the weld's start, alert and result events carry it as ``context``. Parsers and
router here; then `weldmon run` with a real Mosquitto and a PulseAudio null sink playing real
welds, in trigger mode and in gate mode."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from monitor.events import (
    MAX_CONTEXT_KEYS,
    MalformedMessageError,
    Source,
    WeldResult,
    WeldStart,
    parse_event,
)
from monitor.publish.commands import CommandHandlers, CommandRouter, parse_part, parse_trigger
from monitor.publish.homeassistant import HomeAssistantConfig
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ, build_shift, idle_tail, weld_clip

STARTUP_TIMEOUT_S = 90.0
WAIT_S = 60.0
PART = {"part_id": "A-1042", "program": "7", "seam": "2", "operator": "jd"}
GATE_RUNS = [6, 17]  # two welds with safely idle heads (tests/support/shifts.py)
TRIGGER_RUN = 4  # a real weld whose arc lasts well beyond a 3 s trigger window


# ---- parsing and routing ----------------------------------------------------------------------


def test_a_trigger_start_may_carry_part_context() -> None:
    trigger = parse_trigger(json.dumps({"state": "start", **PART, "count": 3}).encode())
    assert trigger.state == "start"
    assert trigger.context_fields() == {**PART, "count": "3"}  # a number is taken as its text
    assert parse_trigger(b"start").context_fields() == {}


@pytest.mark.parametrize(
    "payload",
    [
        {"state": "start", "part id": "x"},  # a key must be an identifier
        {"state": "start", "part_id": "x" * 129},  # values are short
        {"state": "start", "part_id": ["a"]},  # and scalar
        {"state": "start", **{f"k{i}": "v" for i in range(MAX_CONTEXT_KEYS + 1)}},
    ],
)
def test_unbounded_or_odd_context_is_refused(payload: dict) -> None:
    with pytest.raises(MalformedMessageError):
        parse_trigger(json.dumps(payload).encode())


def test_a_part_is_announced_as_json_or_as_the_plain_barcode() -> None:
    assert parse_part(json.dumps(PART).encode()).context_fields() == PART
    assert parse_part(b" A-1042\n").context_fields() == {"part_id": "A-1042"}
    for bad in (b"", b'{"program": "7"}', b"{not json", b'{"part_id": ""}', b"x" * 5000):
        with pytest.raises(MalformedMessageError):
            parse_part(bad)


def test_the_router_hands_parts_and_trigger_context_to_the_daemon() -> None:
    calls: list[tuple] = []
    handlers = CommandHandlers(
        reload=lambda origin: calls.append(("reload",)),
        trigger=lambda s, state, at, ctx: calls.append(("trigger", s, state, ctx)) or True,
        part=lambda s, ctx: calls.append(("part", s, ctx)) or True,
        homeassistant_birth=lambda: None,
        malformed=lambda kind: calls.append(("malformed", kind)),
    )
    router = CommandRouter("plant", HomeAssistantConfig(), ["cell1"], handlers, triggers=True)
    assert "plant/+/part" in router.subscriptions and "plant/+/trigger" in router.subscriptions
    router("plant/cell1/part", b"B-7")
    router("plant/cell1/trigger", b'{"state": "start", "seam": "3"}')
    router("plant/cell1/part", b"")
    router("plant/a/b/part", b"B-8")
    assert calls == [
        ("part", "cell1", {"part_id": "B-7"}),
        ("trigger", "cell1", "start", {"seam": "3"}),
        ("malformed", "part"),
        ("malformed", "part"),
    ]


def test_old_consumers_events_without_context_still_parse() -> None:
    start = WeldStart(
        daemon_version="t",
        model_sha256="ab" * 32,
        station="cell1",
        weld_id="cell1-1",
        source=Source(type="device", name="x"),
        started_at="2026-03-02T09:00:00.000Z",
        segmentation="trigger",
        threshold=0.5,
    )
    assert parse_event(start.to_json()).context is None
    payload = json.loads(start.to_json())
    payload["context"] = PART
    assert parse_event(json.dumps(payload).encode()).context == PART


# ---- weldmon run -------------------------------------------------------------------------------


def _results(collector, station: str = "cell1") -> list[WeldResult]:
    return [parse_event(m.payload) for m in collector.matching(f"weldmon/{station}/weld/result")]


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.real_data
@pytest.mark.slow
def test_a_trigger_start_with_a_part_id_gives_a_result_carrying_it(
    pulse: PulseAudio, mosquitto: MosquittoBroker, mqtt_subscriber, recordings: list, tmp_path: Path
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(tmp_path, artifact, mosquitto, segmentation={"mode": "trigger"})
    pulse.create_sink("parts", RATE_HZ, 1)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log")
    trigger = "weldmon/cell1/trigger"
    weld = weld_clip(recordings[TRIGGER_RUN].flac, cut_s=(3.0, 30.0))
    player = None
    try:
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
        player = pulse.play_array(weld[:, None], RATE_HZ, "parts")
        # 1. the part in the trigger's start
        collector.publish(trigger, json.dumps({"state": "start", **PART}).encode())
        collector.wait_for("weldmon/cell1/weld/start", 1, WAIT_S)
        time.sleep(2.5)  # two windows of real arc in the weld
        collector.publish(trigger, b"stop")
        collector.wait_for("weldmon/cell1/weld/result", 1, WAIT_S)
        # 2. announced (a barcode scan), then a start that adds the operator
        collector.publish(
            "weldmon/cell1/part", json.dumps({"part_id": "B-7", "seam": "3"}).encode()
        )
        daemon.wait_for_log("part_announced", WAIT_S)
        collector.publish(trigger, b'{"state": "start", "operator": "kim", "seam": "4"}')
        collector.wait_for("weldmon/cell1/weld/start", 2, WAIT_S)
        collector.publish(trigger, b"stop")
        collector.wait_for("weldmon/cell1/weld/result", 2, WAIT_S)
        # 3. nothing said: the announcement was used up by the weld before
        collector.publish(trigger, b"start")
        collector.wait_for("weldmon/cell1/weld/start", 3, WAIT_S)
        collector.publish(trigger, b"stop")
        collector.wait_for("weldmon/cell1/weld/result", 3, WAIT_S)
        code = daemon.stop()
    finally:
        daemon.kill()
        if player is not None:
            player.kill()
            player.wait()
    assert code == 0, daemon.tail()
    results = _results(collector)
    assert [r.context for r in results] == [
        PART,
        {"part_id": "B-7", "seam": "4", "operator": "kim"},  # the trigger's own keys win
        None,
    ]
    assert results[0].n_windows >= 1 and results[0].end_reason == "trigger"
    starts = [parse_event(m.payload) for m in collector.matching("weldmon/cell1/weld/start")]
    assert [s.context for s in starts] == [r.context for r in results]
    assert all(s.weld_id == r.weld_id for s, r in zip(starts, results, strict=True))


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.real_data
@pytest.mark.slow
def test_a_part_announced_before_a_gate_weld_is_carried_by_that_weld_only(
    pulse: PulseAudio, mosquitto: MosquittoBroker, mqtt_subscriber, recordings: list, tmp_path: Path
) -> None:
    # threshold 0: every judged weld is a defect, so the alert event is exercised too
    artifact = export_untrained(tmp_path / "artifact", threshold=0.0).path
    config = write_monitor_config(tmp_path, artifact, mosquitto)
    pulse.create_sink("gateparts", RATE_HZ, 1)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log")
    first = np.concatenate(
        [weld_clip(recordings[GATE_RUNS[0]].flac), idle_tail(recordings[GATE_RUNS[0]].flac)]
    )
    second = build_shift([recordings[GATE_RUNS[1]].flac])
    try:
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
        collector.publish("weldmon/cell1/part", b"C-55")  # a barcode scanner's plain text
        daemon.wait_for_log("part_announced", WAIT_S)
        assert pulse.play_array(first[:, None], RATE_HZ, "gateparts").wait(60) == 0
        collector.wait_for("weldmon/cell1/weld/result", 1, WAIT_S)
        assert pulse.play_array(second[:, None], RATE_HZ, "gateparts").wait(60) == 0
        collector.wait_for("weldmon/cell1/weld/result", 2, WAIT_S)
        code = daemon.stop()
    finally:
        daemon.kill()
    assert code == 0, daemon.tail()
    results = _results(collector)
    assert [r.context for r in results] == [{"part_id": "C-55"}, None]
    alerts = [parse_event(m.payload) for m in collector.matching("weldmon/cell1/weld/alert")]
    assert alerts and alerts[0].weld_id == results[0].weld_id
    assert alerts[0].context == {"part_id": "C-55"}
