"""OPC UA for PLCs and SCADA: the values kept from events, the server with a real asyncua
client, and `weldmon run` serving it while real welds play into a PulseAudio null sink."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from asyncua import Client, ua

from monitor.events import ErrorEvent, Source, WeldAlert, WeldProgress, WeldResult, WeldStart
from monitor.publish.opcua import OpcUaError, OpcUaServer
from monitor.publish.opcua_state import OpcUaConfig, OpcUaState
from tests.support import shifts
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector, free_port
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio

NS = "urn:weldmon"
SHA = "ab" * 32
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STARTUP_TIMEOUT_S = 90.0  # daemon start on a loaded 2-core box
RATE = shifts.RATE_HZ
SHIFT_RUNS = [4, 17]  # two welds with safely idle heads (tests/support/shifts.py)


def _common(station: str = "cell1", weld: str = "cell1-w1") -> dict:
    return {
        "daemon_version": "test",
        "model_sha256": SHA,
        "station": station,
        "weld_id": weld,
        "source": Source(type="device", name="pulse"),
    }


def _start(station: str = "cell1", weld: str = "cell1-w1") -> WeldStart:
    return WeldStart(**_common(station, weld), started_at=T0, segmentation="gate", threshold=0.5)


def _result(label: int, p: float, station: str = "cell1", weld: str = "cell1-w1") -> WeldResult:
    return WeldResult(
        **_common(station, weld),
        started_at=T0,
        ended_at=T0 + timedelta(seconds=6),
        duration_s=6.0,
        label=label,
        label_name="defect" if label else "good_weld",
        p_defect=p,
        threshold=0.5,
        n_windows=6,
        window_p_max=p,
        degraded=False,
        dropped_frames=0,
        end_reason="gate",
    )


def _alert(p: float = 0.7) -> WeldAlert:
    return WeldAlert(**_common(), p_defect=p, threshold=0.5, n_windows=2, started_at=T0, at=T0)


# ---- the values (pure) ----------------------------------------------------------------------


def test_a_weld_sets_in_progress_then_the_verdict_group_and_counts_the_result() -> None:
    state = OpcUaState(["cell1", "cell2"])
    assert state.apply(_start())
    assert state.snapshot().stations["cell1"].weld_in_progress
    progress = WeldProgress(
        **_common(),
        window_index=0,
        window_p_defect=0.3,
        p_defect=0.3,
        n_windows=1,
        threshold=0.5,
        elapsed_s=1.0,
    )
    state.apply(progress)
    assert state.snapshot().stations["cell1"].rolling_p_defect == 0.3
    state.apply(_result(0, 0.2))
    got = state.snapshot().stations["cell1"]
    assert (got.verdict, got.label, got.p_defect, got.weld_id) == ("good_weld", 0, 0.2, "cell1-w1")
    assert got.result_count == 1 and not got.weld_in_progress and not got.alert
    assert got.result_at == T0 + timedelta(seconds=6)
    other = state.snapshot().stations["cell2"]
    assert other.result_count == 0 and other.verdict == "none" and other.label == -1


def test_an_alert_latches_until_acknowledged() -> None:
    state = OpcUaState(["cell1"], latch_until_acknowledged=True)
    state.apply(_start())
    state.apply(_alert())
    state.apply(_result(1, 0.8))
    state.apply(_start(weld="cell1-w2"))
    assert state.snapshot().stations["cell1"].alert  # survives the next weld's start
    assert state.acknowledge("cell1")
    assert not state.snapshot().stations["cell1"].alert
    assert not state.acknowledge("cell1")  # nothing left to acknowledge


def test_without_acknowledgement_an_alert_clears_at_the_next_weld() -> None:
    state = OpcUaState(["cell1"], latch_until_acknowledged=False)
    state.apply(_start())
    state.apply(_result(1, 0.9))
    assert state.snapshot().stations["cell1"].alert
    state.apply(_start(weld="cell1-w2"))
    assert not state.snapshot().stations["cell1"].alert


def test_events_of_other_stations_and_errors_change_no_station() -> None:
    state = OpcUaState(["cell1"])
    assert not state.apply(_result(1, 0.9, station="elsewhere", weld="elsewhere-w1"))
    error = ErrorEvent(daemon_version="test", model_sha256=SHA, code="device_lost", message="x")
    assert not state.apply(error)
    assert state.snapshot().stations["cell1"].result_count == 0
    assert state.snapshot().model_sha256 == SHA


def test_the_endpoint_brackets_an_ipv6_host() -> None:
    assert OpcUaConfig(host="::1", port=4841).endpoint == "opc.tcp://[::1]:4841/weldmon"
    assert OpcUaConfig().endpoint == "opc.tcp://127.0.0.1:4840/weldmon"
    assert not OpcUaConfig().enabled


# ---- the server with a real client ------------------------------------------------------------


@pytest.fixture
def opcua_server() -> Iterator[OpcUaServer]:
    cfg = OpcUaConfig(enabled=True, port=free_port(), health_interval_s=0.2)
    health = {"cell1": "ok", "cell2": "dead_microphone"}
    server = OpcUaServer(cfg, ["cell1", "cell2"], health.__getitem__)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _read(client: Client, ns: int, station: str, name: str) -> object:
    return await client.get_node(ua.NodeId(f"{station}.{name}", ns)).read_value()


async def _wait_value(
    client: Client, ns: int, station: str, name: str, want: object, timeout: float = 10.0
) -> None:
    """Subscribe to one variable and return once it holds `want` (fails after `timeout`)."""
    seen: asyncio.Queue[object] = asyncio.Queue()

    class Handler:
        def datachange_notification(self, node: object, val: object, data: object) -> None:
            seen.put_nowait(val)

    sub = await client.create_subscription(50, Handler())
    try:
        await sub.subscribe_data_change(client.get_node(ua.NodeId(f"{station}.{name}", ns)))
        async with asyncio.timeout(timeout):
            while (await seen.get()) != want:
                pass
    finally:
        await sub.delete()


def test_a_client_reads_the_verdict_and_acknowledges_the_alert(opcua_server: OpcUaServer) -> None:
    async def scenario() -> dict[str, object]:
        async with Client(opcua_server.cfg.endpoint) as client:
            ns = await client.get_namespace_index(NS)
            await _wait_value(client, ns, "cell2", "Health", "dead_microphone")
            opcua_server(_start())
            await _wait_value(client, ns, "cell1", "WeldInProgress", True)
            opcua_server(_alert())
            opcua_server(_result(1, 0.83))
            await _wait_value(client, ns, "cell1", "ResultCount", 1)
            got = {
                name: await _read(client, ns, "cell1", name)
                for name in ("Verdict", "Label", "PDefect", "WeldId", "Alert", "WeldInProgress")
            }
            by_path = await client.nodes.objects.get_child(
                [f"{ns}:Weldmon", f"{ns}:cell1", f"{ns}:PDefect"]
            )
            got["by_path"] = await by_path.read_value()
            got["sha"] = await client.get_node(ua.NodeId("ModelSha256", ns)).read_value()
            station = client.get_node(ua.NodeId("cell1", ns))
            await station.call_method(ua.NodeId("cell1.AcknowledgeAlert", ns))
            got["alert_after_ack"] = await _read(client, ns, "cell1", "Alert")
            got["health"] = await _read(client, ns, "cell1", "Health")
            with pytest.raises(ua.UaStatusCodeError):  # clients only read the values
                await client.get_node(ua.NodeId("cell1.Alert", ns)).write_value(True)
            return got

    got = asyncio.run(scenario())
    assert got["Verdict"] == "defect" and got["Label"] == 1
    assert got["PDefect"] == pytest.approx(0.83) and got["by_path"] == pytest.approx(0.83)
    assert got["WeldId"] == "cell1-w1" and got["Alert"] is True
    assert got["WeldInProgress"] is False
    assert got["sha"] == SHA
    assert got["alert_after_ack"] is False and opcua_server.acknowledged == 1
    assert got["health"] == "ok"


def test_a_port_in_use_is_reported_not_raised_later() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = OpcUaServer(OpcUaConfig(enabled=True, port=port), ["cell1"], lambda _: "ok")
        with pytest.raises(OpcUaError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.start()
    server(_result(1, 0.9))  # the listener of a server that never started does nothing
    server.stop()


def test_a_failing_health_probe_shows_unknown_and_the_server_goes_on() -> None:
    def broken(station: str) -> str:
        raise RuntimeError("probe broke")

    cfg = OpcUaConfig(enabled=True, port=free_port(), health_interval_s=0.1)
    server = OpcUaServer(cfg, ["cell1"], broken)
    server.start()
    try:

        async def scenario() -> object:
            async with Client(cfg.endpoint) as client:
                ns = await client.get_namespace_index(NS)
                await _wait_value(client, ns, "cell1", "Health", "unknown")
                server(_result(0, 0.1))
                await _wait_value(client, ns, "cell1", "ResultCount", 1)
                return await _read(client, ns, "cell1", "Verdict")

        assert asyncio.run(scenario()) == "good_weld"
    finally:
        server.stop()


# ---- weldmon run serving OPC UA ----------------------------------------------------------------


@dataclass
class DaemonRun:
    results: list[dict]  # from MQTT
    opcua: dict[str, object] = field(default_factory=dict)
    in_progress_seen: list[bool] = field(default_factory=list)
    health_seen: list[str] = field(default_factory=list)
    exit_code: int = -1
    log: str = ""


async def _watch_daemon(
    endpoint: str, pulse: PulseAudio, audio: np.ndarray, collector: MqttCollector, run: DaemonRun
) -> None:
    async with Client(endpoint) as client:
        ns = await client.get_namespace_index(NS)
        changes: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        names: dict[str, str] = {}

        class Handler:
            def datachange_notification(self, node: object, val: object, data: object) -> None:
                changes.put_nowait((names[str(node)], val))

        sub = await client.create_subscription(50, Handler())
        for name in ("WeldInProgress", "ResultCount", "Health"):
            node = client.get_node(ua.NodeId(f"cell1.{name}", ns))
            names[str(node)] = name
            await sub.subscribe_data_change(node)
        player = None
        async with asyncio.timeout(180):
            while True:
                name, value = await changes.get()
                if name == "Health":
                    run.health_seen.append(value)  # type: ignore[arg-type]
                    if value == "dead_microphone" and player is None:
                        # The null sink's zeros made the microphone "dead"; now the welds.
                        player = pulse.play_array(audio[:, None], RATE, "opcua")
                elif name == "WeldInProgress":
                    run.in_progress_seen.append(bool(value))
                elif name == "ResultCount" and value == len(SHIFT_RUNS):
                    break
        await sub.delete()
        names_read = ("Verdict", "Label", "PDefect", "WeldId", "Alert", "Threshold", "Health")
        for name in (*names_read, "WeldInProgress"):
            run.opcua[name] = await _read(client, ns, "cell1", name)
        await client.get_node(ua.NodeId("cell1", ns)).call_method(
            ua.NodeId("cell1.AcknowledgeAlert", ns)
        )
        run.opcua["alert_after_ack"] = await _read(client, ns, "cell1", "Alert")
        assert player is not None
        await asyncio.to_thread(player.wait, 60)
    collector.wait_for("weldmon/+/weld/result", len(SHIFT_RUNS), 30.0)
    run.results = [json.loads(m.payload) for m in collector.matching("weldmon/+/weld/result")]


@pytest.fixture(scope="module")
def daemon_run(
    pulse_server: PulseAudio, recordings: list, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonRun]:
    folder = tmp_path_factory.mktemp("opcua")
    broker = MosquittoBroker(folder / "mosquitto")
    broker.start()
    # threshold 0: every judged weld is a defect, so the alert flag is exercised
    artifact = export_untrained(folder / "artifact", threshold=0.0).path
    port = free_port()
    config = write_monitor_config(
        folder,
        artifact,
        broker,
        audio={"silence_alarm_s": 1.0},
        opcua={"enabled": True, "port": port, "health_interval_s": 0.2},
    )
    audio = shifts.build_shift([recordings[i].flac for i in SHIFT_RUNS])
    pulse_server.create_sink("opcua", RATE, 1)
    collector = MqttCollector(broker, ["weldmon/#"]).start()
    daemon = WeldmonRun(config, pulse_server.subprocess_env(), folder / "daemon.stderr")
    run = DaemonRun(results=[])
    try:
        daemon.wait_for_log("opcua_listening", STARTUP_TIMEOUT_S)
        endpoint = f"opc.tcp://127.0.0.1:{port}/weldmon"
        asyncio.run(_watch_daemon(endpoint, pulse_server, audio, collector, run))
    finally:
        run.exit_code = daemon.stop()
        run.log = daemon.text()
        collector.stop()
        broker.stop()
        pulse_server.remove_sink("opcua")
    yield run


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.real_data
@pytest.mark.slow
def test_the_daemon_serves_each_result_as_published_on_mqtt(daemon_run: DaemonRun) -> None:
    assert daemon_run.exit_code == 0, daemon_run.log[-3000:]
    last = daemon_run.results[-1]
    got = daemon_run.opcua
    assert got["WeldId"] == last["weld_id"]
    assert got["Verdict"] == last["label_name"] == "defect" and got["Label"] == 1
    assert got["PDefect"] == pytest.approx(last["p_defect"], abs=1e-9)
    assert got["Threshold"] == pytest.approx(last["threshold"])
    assert got["Alert"] is True and got["alert_after_ack"] is False
    assert '"event": "opcua_alert_acknowledged"' in daemon_run.log


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.real_data
@pytest.mark.slow
def test_the_daemon_shows_welds_in_progress_and_the_stations_health(
    daemon_run: DaemonRun,
) -> None:
    # Every weld: True at its start, False at its result.
    assert daemon_run.in_progress_seen.count(True) == len(SHIFT_RUNS), daemon_run.in_progress_seen
    assert daemon_run.opcua["WeldInProgress"] is False  # read once ResultCount said 2
    health = daemon_run.health_seen
    assert "dead_microphone" in health and health[-1] == "ok", health
    assert daemon_run.opcua["Health"] == "ok"
