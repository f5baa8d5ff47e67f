"""Model reload without a restart (monitor/reload.py): the command payload, the checks made
before a swap, the swap between welds in the pipeline, and `weldmon run` reloading under load
(SIGHUP and ``{prefix}/cmd/reload``) against a real broker and a PulseAudio null sink."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

from deploy.loader import DeployModel, load_artifact
from monitor.audio.blocks import AudioBlock
from monitor.config import load_config
from monitor.events import Event, MalformedMessageError, Source, WeldResult, WeldStart
from monitor.pipeline.core import Pipeline
from monitor.pipeline.inference import InferenceWorker
from monitor.pipeline.settings import PipelineSettings
from monitor.pipeline.tracker import ModelInfo, TrackerOptions
from monitor.publish.commands import ReloadCommand, parse_reload_command, reload_topic
from monitor.reload import Reloader, ReloadError, prepare_reload
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker, MqttCollector
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio
from tests.support.shifts import build_shift, weld_clip
from tests.test_daemon_ops import END_TO_END, RATE, RESULT_TIMEOUT_S, STARTUP_TIMEOUT_S

torch.set_num_threads(1)
EPOCH_UTC = 1_700_000_000.0
SOURCE = Source(type="device", name="synthetic")
BLOCK_S = 0.1
RELOAD_RUNS = [6, 17, 22]  # manifest rows with safely idle heads (tests/test_daemon.py)
LONG_FIRST_CUT_S = (3.0, 16.0)  # the first weld burns ~11 s: the reload lands inside it


# -- the command payload ------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"reload", b" reload\n", b"{}", b'{"request_id": "a1"}'])
def test_reload_command_accepts_the_documented_forms(payload: bytes) -> None:
    parse_reload_command(payload)


@pytest.mark.parametrize(
    "payload",
    [b"restart", b"[1]", b'{"model": "x.pt"}', b'{"request_id": ""}', b"\xff\xfe", b"r" * 2000],
)
def test_reload_command_refuses_anything_else(payload: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        parse_reload_command(payload)


@given(st.binary(max_size=200))
def test_any_command_payload_parses_or_is_refused_as_malformed(payload: bytes) -> None:
    try:
        command = parse_reload_command(payload)
    except MalformedMessageError as exc:
        assert str(exc)  # refused with a reason, never another exception
    else:
        assert isinstance(command, ReloadCommand)


def test_reload_topic_sits_under_the_prefix() -> None:
    assert reload_topic("plant/cell3") == "plant/cell3/cmd/reload"


# -- checks before a swap -----------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("artifacts")
    corrupt = folder / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a TorchScript archive")
    return {
        "old": export_untrained(folder / "old", seed=7).path,
        "new": export_untrained(folder / "new", seed=8).path,
        "corrupt": corrupt,
    }


def _config(tmp_path: Path, model_path: Path, **extra: object) -> Path:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    data = {"model": {"path": str(model_path)}, "state_dir": str(state), **extra}
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_prepare_reload_loads_the_model_the_config_now_names(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    path = _config(tmp_path, artifacts["old"])
    running = load_config(path)
    old = load_artifact(artifacts["old"])
    _config(tmp_path, artifacts["new"])
    plan = prepare_reload(path, running, old)
    assert plan.model.sha256 == load_artifact(artifacts["new"]).sha256 != old.sha256
    assert plan.cfg.model.path == artifacts["new"] and plan.needs_restart == ()


def test_prepare_reload_refuses_a_model_that_does_not_match_the_pin(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    path = _config(tmp_path, artifacts["old"])
    running, old = load_config(path), load_artifact(artifacts["old"])
    _config(tmp_path, artifacts["new"], model={"path": str(artifacts["new"]), "sha256": "0" * 64})
    with pytest.raises(ReloadError, match="model"):
        prepare_reload(path, running, old)


def test_prepare_reload_refuses_a_corrupt_model(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    path = _config(tmp_path, artifacts["old"])
    running, old = load_config(path), load_artifact(artifacts["old"])
    _config(tmp_path, artifacts["corrupt"])
    with pytest.raises(ReloadError, match=r"corrupt\.pt"):
        prepare_reload(path, running, old)


def test_prepare_reload_refuses_a_config_that_no_longer_validates(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    path = _config(tmp_path, artifacts["old"])
    running, old = load_config(path), load_artifact(artifacts["old"])
    _config(tmp_path, artifacts["new"], audio={"chanels": 2})
    with pytest.raises(ReloadError, match=r"audio\.chanels"):
        prepare_reload(path, running, old)


def test_prepare_reload_names_changed_sections_that_wait_for_a_restart(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    path = _config(tmp_path, artifacts["old"])
    running, old = load_config(path), load_artifact(artifacts["old"])
    _config(tmp_path, artifacts["new"], audio={"channels": 2}, clips={"policy": "all"})
    plan = prepare_reload(path, running, old)
    assert plan.needs_restart == ("audio",)
    assert plan.cfg.audio.channels == 1 and plan.cfg.clips.policy == "all"


def test_reload_requests_that_arrive_during_a_reload_are_merged_into_one_more() -> None:
    prepared: list[float] = []
    release = threading.Event()

    def prepare():
        prepared.append(time.monotonic())
        release.wait(5.0)
        return "plan"

    applied: list[object] = []

    async def apply(plan) -> None:
        applied.append(plan)

    async def main() -> None:
        reloader = Reloader(prepare, apply, lambda message: None)
        reloader.request("test")
        await asyncio.sleep(0.1)
        for _ in range(3):
            reloader.request("test")
        release.set()
        await reloader.close()
        await asyncio.sleep(0)
        await reloader.close()

    asyncio.run(main())
    assert len(prepared) == 2 and applied == ["plan", "plan"]


def test_a_failing_reload_reports_and_leaves_the_reloader_usable() -> None:
    failures: list[str] = []

    def prepare():
        raise ReloadError("model.path: no such file /nope.pt")

    async def apply(plan) -> None:
        raise AssertionError("a failed prepare must not be applied")

    async def main() -> Reloader:
        reloader = Reloader(prepare, apply, failures.append)
        for _ in range(2):
            reloader.request("test")
            await reloader.close()
        return reloader

    reloader = asyncio.run(main())
    assert failures == ["model.path: no such file /nope.pt"] * 2 and reloader.failures == 2


# -- the swap inside the pipeline -------------------------------------------------------


def _blocks(seconds: float) -> Iterator[AudioBlock]:
    rng = np.random.default_rng(5)
    n = round(BLOCK_S * RATE)
    for i in range(round(seconds / BLOCK_S)):
        samples = (rng.standard_normal((n, 1)) * 0.05).astype(np.float32)
        yield AudioBlock(samples, i * n, RATE, 1, EPOCH_UTC)


def test_a_swap_lets_the_weld_in_progress_finish_on_the_old_model(
    artifacts: dict[str, Path],
) -> None:
    old, new = load_artifact(artifacts["old"]), load_artifact(artifacts["new"])
    events: list[Event] = []
    settings = PipelineSettings(["cell"], "mix", "trigger", max_in_flight=32)

    def options(model: DeployModel) -> TrackerOptions:
        return TrackerOptions(ModelInfo.of(model), "0.1.0", "trigger")

    async def main() -> int:
        with InferenceWorker(old, 16, 64) as w_old, InferenceWorker(new, 16, 64) as w_new:
            async with Pipeline(settings, options(old), w_old, events.append, RATE) as p:
                blocks = list(_blocks(9.0))
                await p.feed(blocks[0], SOURCE)
                assert p.push_trigger("cell", "start", EPOCH_UTC + 0.5)
                assert p.push_trigger("cell", "stop", EPOCH_UTC + 4.0)
                for b in blocks[1:20]:
                    await p.feed(b, SOURCE)
                p.use_model(options(new), w_new)  # 2 s in: weld one is open
                assert p.welds_using(w_old) == 1
                for b in blocks[20:45]:
                    await p.feed(b, SOURCE)
                assert p.push_trigger("cell", "start", EPOCH_UTC + 5.0)
                assert p.push_trigger("cell", "stop", EPOCH_UTC + 8.5)
                for b in blocks[45:]:
                    await p.feed(b, SOURCE)
                await asyncio.wait_for(p.wait_unused(w_old), 10.0)
                await p.end_stream("shutdown", "interrupted")
            return w_old.counters.windows

    old_windows = asyncio.run(main())
    starts = [e for e in events if isinstance(e, WeldStart)]
    results = [e for e in events if isinstance(e, WeldResult)]
    assert [r.model_sha256 for r in results] == [old.sha256, new.sha256]
    assert [s.model_sha256 for s in starts] == [old.sha256, new.sha256]
    assert [r.n_windows for r in results] == [3, 3] and not any(r.degraded for r in results)
    assert old_windows == 3  # every window of weld one went to the old model, no other


# -- `weldmon run` reloading under load -------------------------------------------------


@dataclass
class ReloadRun:
    shas: dict[str, str]
    starts: list[dict]
    results: list[dict]
    errors: list[dict]
    status: list[dict]
    reloaded: list[dict]  # model_reloaded log lines
    malformed: list[dict]  # malformed_command log lines
    exit_code: int


def _point_config_at(config: Path, model: Path) -> None:
    data = yaml.safe_load(config.read_text())
    data["model"]["path"] = str(model)
    config.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def reload_run(
    pulse_server: PulseAudio,
    recordings: list,
    artifacts: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ReloadRun]:
    folder = tmp_path_factory.mktemp("reload")
    broker = MosquittoBroker(folder / "broker")
    broker.start()
    config = write_monitor_config(folder, artifacts["old"], broker, http={"enabled": False})
    flacs = [recordings[i].flac for i in RELOAD_RUNS]
    shift = np.concatenate(
        [weld_clip(flacs[0], RATE, cut_s=LONG_FIRST_CUT_S), build_shift(flacs[1:], RATE)]
    )
    pulse_server.create_sink("reload", RATE, 1)
    collector = MqttCollector(broker, ["weldmon/#"]).start()
    daemon = WeldmonRun(config, pulse_server.subprocess_env(), config.with_suffix(".stderr"))
    try:
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        player = pulse_server.play_array(shift[:, None], RATE, "reload")
        collector.wait_for("weldmon/+/weld/start", 1, RESULT_TIMEOUT_S)
        _point_config_at(config, artifacts["new"])
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("model_reloaded", RESULT_TIMEOUT_S)
        collector.wait_for("weldmon/+/weld/result", 1, RESULT_TIMEOUT_S)
        _point_config_at(config, artifacts["corrupt"])
        collector.publish("weldmon/cmd/reload", b"reload")
        collector.wait_for("weldmon/error", 1, RESULT_TIMEOUT_S)
        collector.publish("weldmon/cmd/reload", b"please reload now")
        daemon.wait_for_log("malformed_command", RESULT_TIMEOUT_S)
        player.wait(60)
        collector.wait_for("weldmon/+/weld/result", len(RELOAD_RUNS), RESULT_TIMEOUT_S)
        time.sleep(1.0)  # nothing more may come
    finally:
        code = daemon.stop()
        collector.stop()
        broker.stop()
        pulse_server.remove_sink("reload")

    def payloads(topic: str) -> list[dict]:
        return [json.loads(m.payload) for m in collector.matching(topic)]

    yield ReloadRun(
        shas={k: load_artifact(v).sha256 for k, v in artifacts.items() if k != "corrupt"},
        starts=payloads("weldmon/+/weld/start"),
        results=payloads("weldmon/+/weld/result"),
        errors=payloads("weldmon/error"),
        status=payloads("weldmon/status"),
        reloaded=daemon.events("model_reloaded"),
        malformed=daemon.events("malformed_command"),
        exit_code=code,
    )


def _with_marks(test):
    for mark in END_TO_END:
        test = mark(test)
    return test


@_with_marks
def test_sighup_swaps_the_model_between_welds_without_losing_a_window_or_a_weld(
    reload_run: ReloadRun,
) -> None:
    run = reload_run
    assert run.exit_code == 0
    assert [r["weld_id"] for r in run.results] == [s["weld_id"] for s in run.starts]
    assert len(run.results) == len(RELOAD_RUNS)
    first = run.results[0]
    (reloaded,) = run.reloaded
    assert reloaded["welds_finishing_on_old_model"] == [first["weld_id"]]
    assert [r["model_sha256"] for r in run.results] == [
        run.shas["old"],
        run.shas["new"],
        run.shas["new"],
    ]
    for result in run.results:
        assert not result["degraded"], result
        assert result["n_windows"] == int(result["duration_s"])  # every whole window judged


@_with_marks
def test_a_reload_to_a_corrupt_model_is_refused_and_the_loaded_model_stays(
    reload_run: ReloadRun,
) -> None:
    (error,) = reload_run.errors
    assert error["code"] == "reload_failed" and "corrupt.pt" in error["message"]
    assert error["model_sha256"] == reload_run.shas["new"]
    assert reload_run.results[-1]["model_sha256"] == reload_run.shas["new"]
    online = [s for s in reload_run.status if s["state"] == "online"]
    assert online[-1]["model_sha256"] == reload_run.shas["new"]


@_with_marks
def test_a_malformed_reload_command_is_ignored_with_a_warning(reload_run: ReloadRun) -> None:
    assert len(reload_run.malformed) == 1
    assert reload_run.malformed[0]["level"] == "warning"
    assert len(reload_run.reloaded) == 1  # it did not reload
