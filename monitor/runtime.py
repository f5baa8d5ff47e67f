"""Start-up pieces `run` and `replay` share: the model, the pipeline settings and the MQTT
link (the event router they both feed is `monitor.publish.router`). Keeping them here is
what makes both commands one code path."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import structlog

from deploy.errors import ArtifactError, WeldmonError
from deploy.loader import DeployModel, load_artifact
from deploy.segment.modes import SegmentationMode
from monitor.config import MonitorConfig
from monitor.events import ErrorCode, ErrorEvent, status_payload_factory
from monitor.ops.memory import pin_mmap_threshold
from monitor.pipeline.settings import PipelineSettings
from monitor.pipeline.tracker import (
    ModelInfo,
    ModelSwapError,
    StationThresholds,
    TeachView,
    TrackerOptions,
    check_swappable,
)
from monitor.publish.interrupted import interrupted_message, report_interrupted
from monitor.publish.outbox import Outbox
from monitor.publish.publisher import MqttPublisher
from monitor.publish.router import EventRouter
from monitor.publish.settings import MAX_CLIENT_ID_CHARS, MqttConfig
from monitor.publish.spool import StateHook
from weldmon import __version__

OUTBOX_FILE = "outbox.sqlite3"  # in state_dir

log = structlog.get_logger(__name__)


class StartupError(WeldmonError):
    """The daemon cannot start with this configuration (exit code 2)."""


def _load_checked(cfg: MonitorConfig, path: Path, sha256: str | None, key: str) -> DeployModel:
    """Load, pin-check and self-test one artifact; StartupError names the config key."""
    try:
        model = load_artifact(
            path, sha256, backend=cfg.inference.backend, threads=cfg.inference.threads
        )
        model.self_test()
    except ArtifactError as exc:
        raise StartupError(f"{key}: {exc}") from exc
    return model


def load_model(cfg: MonitorConfig) -> DeployModel:
    """Load, pin-check and self-test the configured artifact; StartupError names the file."""
    pin_mmap_threshold()  # before the runtime allocates the model: see monitor/ops/memory.py
    model = _load_checked(cfg, cfg.model.path, cfg.model.sha256, "model.path")
    log.info("model_loaded", **model.describe())
    return model


def load_shadow(cfg: MonitorConfig, production: DeployModel) -> DeployModel | None:
    """Load, pin-check and self-test the shadow artifact (None without a ``shadow``
    section); StartupError when it cannot be used, or when its contract (sample rate,
    window length) differs from production's: it must judge the very same windows."""
    if cfg.shadow is None:
        return None
    shadow = _load_checked(cfg, cfg.shadow.path, cfg.shadow.sha256, "shadow.path")
    try:
        check_swappable(ModelInfo.of(shadow), ModelInfo.of(production))
    except ModelSwapError as exc:
        raise StartupError(
            f"shadow.path: {cfg.shadow.path} does not judge the production model's windows: {exc}"
        ) from exc
    log.info("shadow_model_loaded", **shadow.describe())
    return shadow


def shadow_options(cfg: MonitorConfig, shadow: DeployModel) -> TrackerOptions:
    """The facts of the shadow's verdicts: its own identity and its artifact's threshold (a
    station's taught threshold belongs to the production model)."""
    return TrackerOptions(
        model=ModelInfo.of(shadow),
        daemon_version=__version__,
        segmentation=cfg.segmentation.mode,
    )


def pipeline_settings(
    cfg: MonitorConfig,
    segmentation: SegmentationMode | None = None,
    stations: list[str] | None = None,
) -> PipelineSettings:
    """The pipeline's settings from the config (replay may override the segmentation)."""
    return PipelineSettings(
        stations=stations or cfg.audio.station_names(),
        channel_mode=cfg.audio.channel_mode,
        segmentation=segmentation or cfg.segmentation.mode,
        gate=cfg.segmentation.gate,
        trigger_max_weld_s=cfg.segmentation.trigger.max_weld_s,
        # Always made: an open weld's verdict so far is remembered in the outbox for a
        # restart after a crash; `events.progress` only decides whether MQTT gets them.
        progress=True,
        max_in_flight=max(1, cfg.inference.queue_windows - 1),
        crackle=cfg.segmentation.crackle,
        current=cfg.segmentation.current,
        process_clock_offset_s=cfg.process.clock_offset_s,
    )


def tracker_options(
    cfg: MonitorConfig,
    model: DeployModel,
    segmentation: SegmentationMode,
    teach: TeachView | None = None,
) -> TrackerOptions:
    """The facts every event of this process carries (`teach`: the daemon's teach-in)."""
    info = ModelInfo.of(model)
    overrides = {
        name: StationThresholds.resolve(info.threshold, entry.threshold, entry.alert_threshold)
        for name, entry in cfg.audio.station_overrides().items()
    }
    return TrackerOptions(
        model=info,
        daemon_version=__version__,
        segmentation=segmentation,
        include_window_probs=cfg.events.window_probs,
        overrides=overrides,
        alert_windows=cfg.events.alert_windows,
        teach=teach,
    )


def error_event(model: ModelInfo, code: ErrorCode, message: str, **fields: Any) -> ErrorEvent:
    """An ``error`` event of this daemon, naming `model` (``fields``: station, weld_id,
    source)."""
    return ErrorEvent(
        daemon_version=__version__,
        **model.event_fields(),
        code=code,
        message=message,
        **fields,
    )


@contextmanager
def signal_handlers(
    loop: asyncio.AbstractEventLoop, handlers: Mapping[signal.Signals, Callable[[], None]]
) -> Iterator[None]:
    """Signal handlers on the event loop while the body runs."""
    for sig, handler in handlers.items():
        loop.add_signal_handler(sig, handler)
    try:
        yield
    finally:
        for sig in handlers:
            loop.remove_signal_handler(sig)


@asynccontextmanager
async def mqtt_link(
    cfg: MonitorConfig,
    model_sha256: str | Callable[[], str],
    *,
    on_message: Callable[[str, bytes], None] | None = None,
    subscriptions: Sequence[str] = (),
    connect_messages: Callable[[], Sequence[tuple[str, bytes, bool]]] | None = None,
    report: Callable[[ErrorCode, str], None] | None = None,
    final_state: str = "stopped",
) -> AsyncIterator[MqttPublisher | None]:
    """The outbox and the reconnecting publisher while the body runs (None when
    `mqtt.enabled` is false). On exit the outbox is flushed as far as the broker allows
    within half of `stop_timeout_s` and `final_state` is published.

    `model_sha256` may be a callable so the status message names the model in use after a
    reload; `connect_messages` are published at every connect (publisher docs). `report`
    hears when the outbox cannot be written (events are held in memory meanwhile)."""
    if not cfg.mqtt.enabled:
        yield None
        return
    current_sha = model_sha256 if callable(model_sha256) else lambda: model_sha256

    def status_payload(state: str) -> bytes:
        return status_payload_factory(__version__, current_sha(), cfg.mqtt.client_id)(state)

    outbox = Outbox(cfg.state_dir / OUTBOX_FILE, cfg.events.outbox_max_events)
    publisher = MqttPublisher(
        cfg.mqtt,
        outbox,
        status_payload=status_payload,
        on_message=on_message,
        subscriptions=subscriptions,
        connect_messages=connect_messages,
        on_outbox_state=_degraded_outbox_reporter(report),
        publish_progress=cfg.events.progress,
    )
    try:
        async with publisher:
            try:
                yield publisher
            finally:
                # Half the stop budget: capture and clips have a quarter each (daemon.py).
                await publisher.close(final_state, cfg.stop_timeout_s / 2)
    finally:
        outbox.close()


def report_interrupted_welds(
    publisher: MqttPublisher | None,
    events: EventRouter,
    report: Callable[[ErrorCode, str], None],
) -> None:
    """Results for the welds a killed daemon left open, through `events` (so they reach MQTT:
    call it once `events` has the publisher, before any new audio), and one error naming
    them."""
    if publisher is not None:
        welds = report_interrupted(publisher.spool, events)
        if welds:
            report(ErrorCode.INTERRUPTED_WELDS, interrupted_message(welds))


def _degraded_outbox_reporter(
    report: Callable[[ErrorCode, str], None] | None,
) -> StateHook | None:
    if report is None:
        return None

    def state(degraded: bool, message: str) -> None:
        # The error event itself is held in memory and published from there (spool.py).
        if degraded:
            report(ErrorCode.OUTBOX_DEGRADED, message)

    return state


def replay_client_id(daemon_client_id: str) -> str:
    """A client id of replay's own: the daemon's with ``-replay-`` and 8 random hex digits,
    so a replay never takes over the daemon's session (the broker drops the older client)."""
    suffix = f"-replay-{uuid.uuid4().hex[:8]}"
    return daemon_client_id[: MAX_CLIENT_ID_CHARS - len(suffix)] + suffix


@asynccontextmanager
async def replay_link(mqtt: MqttConfig, timeout_s: float) -> AsyncIterator[MqttPublisher]:
    """The publisher of `weldmon replay --publish`: its own client id, no outbox (events are
    held in memory until the broker has them), no retained status and no will, so a live
    daemon on the same broker and the same prefix is never disturbed. On exit everything is
    delivered as far as the broker allows within `timeout_s`; what is not is logged."""
    settings = mqtt.model_copy(update={"client_id": replay_client_id(mqtt.client_id)})
    publisher = MqttPublisher(settings, None, status_payload=None)
    async with publisher:
        try:
            yield publisher
        finally:
            await publisher.close(timeout_s=timeout_s)
