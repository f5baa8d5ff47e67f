"""The daemon's YAML config: one pydantic model per section, validated before anything opens.

Every error is collected and reported at once, each line naming the dotted key and the reason
(``audio.channels: Input should be greater than or equal to 1``). Files the daemon needs (the
model, the state directory) are checked after the schema, so a typo in a key and a missing
model show up in the same message. `load_config` raises `ConfigError`; the CLI turns it into
exit code 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deploy.errors import WeldmonError
from deploy.segment.gate import GateParams
from monitor.events import STATION_PATTERN
from monitor.ops.clip_policy import ClipSettings
from monitor.ops.health import HealthSettings
from monitor.ops.notify import (
    DEFAULT_MAX_AUDIO_AGE_S,
    DEFAULT_MAX_DEVICE_ATTEMPT_AGE_S,
    DEFAULT_MAX_PENDING_AGE_S,
)
from monitor.publish.homeassistant import HomeAssistantSettings
from monitor.publish.settings import MqttSettings
from monitor.segment.triggers import DEFAULT_TRIGGER_MAX_WELD_S

DEFAULT_BLOCK_S = 0.1  # capture block (s): 10 blocks/s keeps latency small, overhead low
DEFAULT_RING_S = 10.0  # ring buffer (s): rides out a 10 s stall of the pipeline without loss
MAX_CHANNELS = 64  # more than any sound card we expect; guards against a typo like 1000
DEFAULT_MAX_BATCH_WINDOWS = 32  # windows per forward pass: 8 stations x a few s of backlog
DEFAULT_QUEUE_WINDOWS = 256  # windows awaiting inference before the pipeline waits
DEFAULT_INFERENCE_THREADS = 1  # one core's worth at most: the box also captures and publishes
DEFAULT_OUTBOX_MAX_EVENTS = 10_000  # ~10 MB of results: days of welds while the broker is down
DEFAULT_STOP_TIMEOUT_S = 8.0  # SIGTERM -> exit budget; systemd's default kill is at 90 s,
# the issue asks for exit within 10 s, so 8 s leaves 2 s for interpreter shutdown.
DEFAULT_DEVICE_RETRY_MIN_S = 0.5  # first wait before reopening a lost device
DEFAULT_DEVICE_RETRY_MAX_S = 5.0  # cap: a re-plugged device is back within 5 s (issue 5)
# Exact digital zeros for this long on an open stream: no real microphone is that quiet (its
# own self-noise alone sets the LSBs), so the capsule, cable or phantom power is gone. A
# minute rides out a muted preamp being switched without crying wolf.
DEFAULT_SILENCE_ALARM_S = 60.0

StationName = Annotated[str, Field(pattern=STATION_PATTERN)]


class ConfigError(WeldmonError):
    """The configuration is unusable; the message lists every problem, one per line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Section):
    """The deploy artifact to load."""

    path: Path  # the TorchScript deploy artifact
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")  # pin: refuse other files


class AudioConfig(_Section):
    """The capture device and how its channels map to stations."""

    device: int | str | None = None  # PortAudio index or name substring; None: default input
    samplerate: int | None = Field(None, ge=8000, le=384_000)  # Hz; None: device default
    channels: int = Field(1, ge=1, le=MAX_CHANNELS)
    channel_mode: Literal["mix", "per_channel"] = "mix"
    stations: list[StationName] = Field(default_factory=list)  # [] -> "station1", ...
    block_s: float = Field(DEFAULT_BLOCK_S, gt=0.0, le=1.0)
    ring_s: float = Field(DEFAULT_RING_S, ge=1.0, le=600.0)
    retry_min_s: float = Field(DEFAULT_DEVICE_RETRY_MIN_S, gt=0.0)
    retry_max_s: float = Field(DEFAULT_DEVICE_RETRY_MAX_S, gt=0.0)
    # s of exact digital silence on an open stream before the "probable dead microphone"
    # error event; null: never alarm
    silence_alarm_s: float | None = Field(DEFAULT_SILENCE_ALARM_S, gt=0.0)

    @model_validator(mode="after")
    def _stations_match(self) -> Self:
        wanted = 1 if self.channel_mode == "mix" else self.channels
        if self.stations and len(self.stations) != wanted:
            raise ValueError(
                f"stations: {self.channel_mode} needs {wanted} station name(s), "
                f"got {len(self.stations)}"
            )
        if len(set(self.stations)) != len(self.stations):
            raise ValueError("stations: names must be unique")
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("retry_max_s must not be below retry_min_s")
        return self

    def station_names(self, channels: int | None = None) -> list[str]:
        """The station names in channel order (defaults: station1, station2, ...)."""
        if self.stations:
            return list(self.stations)
        n = 1 if self.channel_mode == "mix" else (channels or self.channels)
        return [f"station{i + 1}" for i in range(n)]


class TriggerConfig(_Section):
    """Trigger mode: welds start and stop on MQTT messages."""

    max_weld_s: float = Field(DEFAULT_TRIGGER_MAX_WELD_S, gt=0.0)


class SegmentationConfig(_Section):
    """How welds are found in the stream: arc gate, external trigger, or one per file."""

    mode: Literal["gate", "trigger", "file"] = "gate"
    gate: GateParams = GateParams()
    trigger: TriggerConfig = TriggerConfig()


class InferenceConfig(_Section):
    """The inference worker's runtime, batching and queue bound."""

    # auto: ONNX Runtime for a .onnx and for a .pt with its ONNX twin beside it, else
    # TorchScript (deploy.loader); onnx / torchscript: that one, or the daemon does not start.
    backend: Literal["auto", "onnx", "torchscript"] = "auto"
    threads: int = Field(DEFAULT_INFERENCE_THREADS, ge=1, le=64)  # intra-op threads
    max_batch_windows: int = Field(DEFAULT_MAX_BATCH_WINDOWS, ge=1, le=1024)
    queue_windows: int = Field(DEFAULT_QUEUE_WINDOWS, ge=1, le=100_000)


class EventsConfig(_Section):
    """Which optional events and fields are emitted."""

    progress: bool = True  # weld_progress after every window (QoS 0)
    window_probs: bool = False  # include every window's p_defect in the result
    outbox_max_events: int = Field(DEFAULT_OUTBOX_MAX_EVENTS, ge=1)


class WatchdogConfig(_Section):
    """When the systemd watchdog is fed (monitor/ops/notify.py `WatchdogGate`); only used when
    systemd sets ``WatchdogSec``."""

    max_audio_age_s: float = Field(DEFAULT_MAX_AUDIO_AGE_S, gt=0.0)  # no block for longer: stuck
    max_pending_age_s: float = Field(DEFAULT_MAX_PENDING_AGE_S, gt=0.0)  # a window waits longer
    # a lost device counts as handled while the last failed open attempt is this recent
    max_device_attempt_age_s: float = Field(DEFAULT_MAX_DEVICE_ATTEMPT_AGE_S, gt=0.0)


class LoggingConfig(_Section):
    """structlog output on stderr."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"  # json: one event per line, for journald


class MonitorConfig(_Section):
    """The whole `monitor.yaml`."""

    model: ModelConfig
    audio: AudioConfig = AudioConfig()
    segmentation: SegmentationConfig = SegmentationConfig()
    inference: InferenceConfig = InferenceConfig()
    events: EventsConfig = EventsConfig()
    mqtt: MqttSettings = MqttSettings()
    http: HealthSettings = HealthSettings()
    clips: ClipSettings = ClipSettings()
    homeassistant: HomeAssistantSettings = HomeAssistantSettings()
    watchdog: WatchdogConfig = WatchdogConfig()
    state_dir: Path
    logging: LoggingConfig = LoggingConfig()
    stop_timeout_s: float = Field(DEFAULT_STOP_TIMEOUT_S, gt=0.0, le=60.0)


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{key}: {msg}")
    return lines


def _file_problems(cfg: MonitorConfig) -> list[str]:
    problems = []
    model = cfg.model.path
    if not model.is_file():
        problems.append(f"model.path: no such file {model}")
    elif not os.access(model, os.R_OK):
        problems.append(f"model.path: {model} is not readable")
    state = cfg.state_dir
    if not state.is_dir():
        problems.append(f"state_dir: no such directory {state}")
    elif not os.access(state, os.R_OK | os.W_OK | os.X_OK):
        problems.append(f"state_dir: {state} is not writable")
    return problems


def parse_config(data: Any, source: str = "config", *, check_files: bool = True) -> MonitorConfig:
    """Validate already-parsed YAML; raises ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        cfg = MonitorConfig.model_validate(data)
    except ValidationError as exc:
        lines = _format_errors(exc)
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines)) from exc
    problems = _file_problems(cfg) if check_files else []
    if problems:
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(problems))
    return cfg


def load_config(path: str | Path, *, check_files: bool = True) -> MonitorConfig:
    """Read and validate `path`; relative paths in it resolve against the file's folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if isinstance(data, dict):
        data = _resolve_relative(data, path.parent)
    return parse_config(data, str(path), check_files=check_files)


def _resolve_relative(data: dict[str, Any], base: Path) -> dict[str, Any]:
    # A config shipped beside its model ("model.path: model.pt") must not depend on the cwd.
    out = dict(data)
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("path"), str):
        out["model"] = {**model, "path": str(base / Path(model["path"]).expanduser())}
    if isinstance(out.get("state_dir"), str):
        out["state_dir"] = str(base / Path(out["state_dir"]).expanduser())
    return out
