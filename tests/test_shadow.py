"""The shadow model (monitor/pipeline/shadow.py) on the real pipeline, inference worker and
artifacts: it judges the very same windows as production, after it, and a shadow that stalls
or cannot judge those windows never changes or delays a production verdict."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deploy.export import export_artifact
from deploy.frontend import FrontEndParams
from deploy.loader import DeployModel, load_artifact
from monitor.audio.blocks import AudioBlock
from monitor.config import ConfigError, load_config, parse_config
from monitor.events import Event, MalformedMessageError, Source, WeldResult
from monitor.events.shadow import (
    ModelCommand,
    ShadowResult,
    parse_model_command,
    parse_shadow_result,
    shadow_topic,
)
from monitor.pipeline.core import Pipeline
from monitor.pipeline.inference import InferenceWorker
from monitor.pipeline.settings import PipelineSettings
from monitor.pipeline.shadow import ShadowJudge
from monitor.pipeline.tracker import ModelInfo, TrackerOptions
from monitor.publish.commands import CommandHandlers, CommandRouter
from monitor.publish.homeassistant import HomeAssistantConfig
from monitor.reload import ReloadError, prepare_reload
from monitor.runtime import StartupError, load_shadow
from tests.support.artifacts import export_untrained, untrained_classifier

torch.set_num_threads(1)
RATE = 16_000
EPOCH_UTC = 1_700_000_000.0
SOURCE = Source(type="device", name="synthetic")
WELDS = [(1.0, 3.5), (4.0, 7.2)]  # trigger start/stop, s after the stream's first sample
STREAM_S = 8.0
STALL_S = 4.0  # how long the stalled shadow hangs: far longer than production needs


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shadow-artifacts")
    return {
        "production": export_untrained(root / "production", seed=7).path,
        "candidate": export_untrained(root / "candidate", seed=11).path,
    }


def _blocks(seconds: float) -> list[AudioBlock]:
    rng = np.random.default_rng(3)
    n = round(0.1 * RATE)
    return [
        AudioBlock(
            (rng.standard_normal((n, 1)) * 0.05).astype(np.float32), i * n, RATE, 1, EPOCH_UTC
        )
        for i in range(round(seconds / 0.1))
    ]


def _options(model: DeployModel) -> TrackerOptions:
    return TrackerOptions(ModelInfo.of(model), "0.1.0", "trigger")


def _run(
    production: DeployModel,
    shadow: DeployModel | None,
    *,
    timeout_s: float = 30.0,
    queue_windows: int = 32,
    on_result: Callable[[], None] = lambda: None,
) -> tuple[list[Event], list[ShadowResult], ShadowJudge]:
    """Two triggered welds through the pipeline: (production events, shadow results, the
    judge); `on_result` is called as each production result is emitted."""
    events: list[Event] = []
    shadows: list[ShadowResult] = []
    settings = PipelineSettings(["cell"], "mix", "trigger", max_in_flight=32)

    def emit(event: Event) -> None:
        events.append(event)
        if isinstance(event, WeldResult):
            on_result()

    async def main() -> ShadowJudge:
        judge = ShadowJudge(shadows.append, queue_windows, timeout_s)
        if shadow is not None:
            judge.use(shadow, _options(shadow))
        with InferenceWorker(production, max_batch_windows=8, queue_windows=64) as worker:
            pipeline = Pipeline(settings, _options(production), worker, emit, RATE, observer=judge)
            async with pipeline as p:
                blocks = _blocks(STREAM_S)
                for i, block in enumerate(blocks):
                    now = i * 0.1
                    for start, stop in WELDS:
                        if abs(now - start) < 1e-6:
                            p.push_trigger("cell", "start", EPOCH_UTC + start)
                        if abs(now - stop) < 1e-6:
                            p.push_trigger("cell", "stop", EPOCH_UTC + stop)
                    await p.feed(block, SOURCE)
                await p.end_stream("shutdown", "interrupted")
                await p.drain()
            await judge.close()
        return judge

    judge = asyncio.run(main())
    return events, shadows, judge


def _results(events: list[Event]) -> list[WeldResult]:
    return [e for e in events if isinstance(e, WeldResult)]


def test_a_shadow_of_the_same_artifact_gives_every_weld_the_same_verdict_under_its_weld_id(
    artifacts: dict[str, Path],
) -> None:
    production = load_artifact(artifacts["production"])
    twin = load_artifact(artifacts["production"])  # its own copy: each worker owns its model
    events, shadows, judge = _run(production, twin)
    results = _results(events)
    assert len(results) == len(WELDS) == len(shadows)
    for result, shadow in zip(results, shadows, strict=True):
        assert shadow.weld_id == result.weld_id and shadow.station == result.station
        assert shadow.shadow is True and shadow.kind == "shadow_result"
        # The same model, but batched differently (production's worker takes what is queued,
        # up to 8 windows; the shadow's its own): float32 sums a few ulps apart, no more.
        assert shadow.p_defect == pytest.approx(result.p_defect, abs=1e-6)
        assert shadow.n_windows == result.n_windows
        assert shadow.label == result.label and shadow.agree is True and shadow.complete
        assert shadow.production_model_sha256 == result.model_sha256
        assert parse_shadow_result(shadow.to_json()) == shadow
    assert judge.counters.results == len(WELDS) and judge.counters.windows_skipped == 0
    assert not any(isinstance(e, ShadowResult) for e in events)  # never among production's


def test_a_candidate_shadow_judges_the_same_windows_with_its_own_model(
    artifacts: dict[str, Path],
) -> None:
    production = load_artifact(artifacts["production"])
    candidate = load_artifact(artifacts["candidate"])
    offline = load_artifact(artifacts["candidate"])
    events, shadows, _ = _run(production, candidate)
    audio = np.concatenate([b.samples[:, 0] for b in _blocks(STREAM_S)])
    for result, shadow in zip(_results(events), shadows, strict=True):
        assert shadow.model_sha256 == candidate.sha256 != result.model_sha256
        start = round((result.started_at.timestamp() - EPOCH_UTC) * RATE)
        weld = audio[start : start + round(result.duration_s * RATE)]
        expected = offline.predict(weld[None, :])  # the artifact's own verdict on the weld
        assert shadow.p_defect == pytest.approx(expected.p_defect, abs=1e-6)
        assert shadow.production_p_defect == result.p_defect


class _StalledModel(DeployModel):
    """The candidate's real model behind a gate the test opens: a shadow that stalls."""

    def __init__(self, inner: DeployModel, gate: threading.Event) -> None:
        super().__init__(
            inner.path,
            inner.sha256,
            inner.metadata,
            chunk_samples=inner.chunk_samples,
            defect_idx=inner.defect_idx,
            eval_pool_ratio=inner.eval_pool_ratio,
            threshold=inner.threshold,
            legacy=inner.legacy,
        )
        self._inner, self._gate = inner, gate

    def _window_probs(self, windows: np.ndarray) -> np.ndarray:
        self._gate.wait()
        return self._inner.window_probs(windows)


def test_a_stalled_shadow_is_skipped_and_counted_and_never_delays_a_production_verdict(
    artifacts: dict[str, Path],
) -> None:
    reference, _, _ = _run(load_artifact(artifacts["production"]), None)
    gate = threading.Event()
    stalled = _StalledModel(load_artifact(artifacts["candidate"]), gate)
    release = threading.Timer(STALL_S, gate.set)  # then the stalled worker can be stopped
    release.start()
    stalled_when_emitted: list[bool] = []
    events, shadows, judge = _run(
        load_artifact(artifacts["production"]),
        stalled,
        timeout_s=0.5,
        queue_windows=1,  # so a stalled shadow also skips windows
        on_result=lambda: stalled_when_emitted.append(not gate.is_set()),
    )
    release.join()
    assert stalled_when_emitted == [True] * len(WELDS)  # production never waited for it
    got, want = _results(events), _results(reference)
    # Labels and window counts exact; p_defect within 1e-6, as the same-artifact test: the
    # worker batches windows differently from run to run (3e-8 apart in a clean-clone run).
    assert [(r.label, r.n_windows) for r in got] == [(r.label, r.n_windows) for r in want]
    assert [r.p_defect for r in got] == pytest.approx([r.p_defect for r in want], abs=1e-6)
    assert len(shadows) == len(WELDS)
    assert all(not s.complete for s in shadows)
    assert judge.counters.windows_failed == sum(s.windows_failed for s in shadows) > 0
    assert judge.counters.windows_skipped == sum(s.windows_skipped for s in shadows) > 0


def test_a_shadow_that_cannot_judge_the_production_windows_is_refused(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    half = export_artifact(
        untrained_classifier(5),
        tmp_path / "half.pt",
        frontend=FrontEndParams(),
        threshold=0.5,
        eval_pool_ratio=0.05,
        chunk_seconds=0.5,
        onnx=False,
    ).path
    data = {"model": {"path": str(artifacts["production"])}, "state_dir": str(tmp_path)}
    cfg = parse_config({**data, "shadow": {"path": str(half)}})
    with pytest.raises(StartupError, match=r"shadow\.path: .*8000 samples at 16000 Hz"):
        load_shadow(cfg, load_artifact(artifacts["production"]))


def test_a_shadow_pin_that_does_not_match_is_refused(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    data = {"model": {"path": str(artifacts["production"])}, "state_dir": str(tmp_path)}
    shadow = {"path": str(artifacts["candidate"]), "sha256": "0" * 64}
    cfg = parse_config({**data, "shadow": shadow})
    with pytest.raises(StartupError, match=r"shadow\.path: .*sha256"):
        load_shadow(cfg, load_artifact(artifacts["production"]))


def test_a_missing_shadow_file_is_named_with_every_other_config_problem(tmp_path: Path) -> None:
    data = {
        "model": {"path": str(tmp_path / "nope.pt")},
        "shadow": {"path": str(tmp_path / "candidate.pt")},
        "state_dir": str(tmp_path),
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    message = str(caught.value)
    assert "model.path: no such file" in message and "shadow.path: no such file" in message


def test_shadow_results_have_a_topic_of_their_own() -> None:
    assert shadow_topic("weldmon", "cell1") == "weldmon/cell1/shadow/result"


# -- promote / rollback commands -----------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b"{}", b'{"by": "alice", "request_id": "r1"}', b'{"figures": {"agreement": 0.93}}'],
)
def test_model_commands_accept_the_documented_forms(payload: bytes) -> None:
    assert isinstance(parse_model_command(payload), ModelCommand)


@pytest.mark.parametrize(
    "payload", [b"promote", b"[1]", b'{"path": "x.pt"}', b'{"expect_sha256": "abc"}', b"{" * 9000]
)
def test_model_commands_refuse_anything_else(payload: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        parse_model_command(payload)


def test_promote_and_rollback_reach_their_handler_and_a_bad_one_is_counted() -> None:
    got: list[tuple[str, ModelCommand]] = []
    malformed: list[str] = []
    handlers = CommandHandlers(
        reload=lambda origin: None,
        trigger=lambda *a: True,
        part=lambda *a: True,
        homeassistant_birth=lambda: None,
        malformed=malformed.append,
        model=lambda action, command: got.append((action, command)),
    )
    router = CommandRouter("plant", HomeAssistantConfig(), ["cell1"], handlers, triggers=False)
    assert {"plant/cmd/promote", "plant/cmd/rollback"} <= set(router.subscriptions)
    router("plant/cmd/promote", b'{"by": "alice"}')
    router("plant/cmd/rollback", b"")
    router("plant/cmd/promote", b"now")
    assert [(a, c.by) for a, c in got] == [("promote", "alice"), ("rollback", "unknown")]
    assert malformed == ["command"]


# -- reload ----------------------------------------------------------------------------------


def _write(tmp_path: Path, production: Path, shadow: Path | None) -> Path:
    path = tmp_path / "monitor.yaml"
    data = {"model": {"path": str(production)}, "state_dir": str(tmp_path)}
    path.write_text(yaml.safe_dump({**data, "shadow": {"path": str(shadow)} if shadow else None}))
    return path


def test_a_reload_loads_the_shadow_the_config_now_names_and_drops_a_removed_one(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    path = _write(tmp_path, artifacts["production"], None)
    running, production = load_config(path), load_artifact(artifacts["production"])
    _write(tmp_path, artifacts["production"], artifacts["candidate"])
    plan = prepare_reload(path, running, production)
    assert (
        plan.shadow is not None
        and plan.shadow.sha256 == load_artifact(artifacts["candidate"]).sha256
    )
    assert plan.cfg.shadow is not None and plan.needs_restart == ()
    _write(tmp_path, artifacts["production"], None)
    assert prepare_reload(path, plan.cfg, production).shadow is None


def test_a_reload_naming_a_shadow_of_another_contract_is_refused_as_a_whole(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    half = export_artifact(
        untrained_classifier(5),
        tmp_path / "half.pt",
        frontend=FrontEndParams(),
        threshold=0.5,
        eval_pool_ratio=0.05,
        chunk_seconds=0.5,
        onnx=False,
    ).path
    path = _write(tmp_path, artifacts["production"], None)
    running, production = load_config(path), load_artifact(artifacts["production"])
    _write(tmp_path, artifacts["candidate"], half)  # a new production model too: kept out
    with pytest.raises(ReloadError, match=r"shadow\.path: .*8000 samples"):
        prepare_reload(path, running, production)
