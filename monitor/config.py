"""The daemon's YAML config: one pydantic model per section, validated before anything opens.

Every error is collected and reported at once, each line naming the dotted key and the reason
(``audio.channels: Input should be greater than or equal to 1``). Files the daemon needs (the
model, the state directory) are checked even when the schema fails, so a typo in a key and
a missing model show up in the same message; so do keys given twice (an error naming the key
and both lines, never "the last one wins") and an empty file (the required keys are named).
`load_config` raises `ConfigError`; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import tempfile
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from deploy.alert_rule import DEFAULT_ALERT_WINDOWS
from deploy.errors import WeldmonError
from deploy.inputs import MAX_CONFIG_BYTES, read_input_text
from deploy.strict_model import StrictModel
from monitor.audio.config import AudioConfig
from monitor.ops.clip_policy import ClipsConfig
from monitor.ops.health import HttpConfig
from monitor.ops.notify import (
    DEFAULT_MAX_AUDIO_AGE_S,
    DEFAULT_MAX_DEVICE_ATTEMPT_AGE_S,
    DEFAULT_MAX_PENDING_AGE_S,
)
from monitor.publish.homeassistant import HomeAssistantConfig
from monitor.publish.opcua_state import OpcUaConfig
from monitor.publish.settings import MqttConfig
from monitor.segment.factory import ProcessConfig, SegmentationConfig
from monitor.teach.config import TeachInConfig

DEFAULT_MAX_BATCH_WINDOWS = 32  # windows per forward pass: 8 stations x a few s of backlog
DEFAULT_QUEUE_WINDOWS = 256  # windows awaiting inference before the pipeline waits
DEFAULT_INFERENCE_THREADS = 1  # one core's worth at most: the box also captures and publishes
DEFAULT_OUTBOX_MAX_EVENTS = 10_000  # ~10 MB of results: days of welds while the broker is down
# SIGTERM -> exit budget: a stop must finish within 10 s, and 8 s leaves 2 s for the
# interpreter's own shutdown.
DEFAULT_STOP_TIMEOUT_S = 8.0
# The units kill at TimeoutStopSec=15s: the whole stop (capture 1/4, clips 1/4, MQTT drain 1/2
# of the budget) plus the interpreter's exit must end before that (tests/test_systemd_units.py).
MAX_STOP_TIMEOUT_S = 12.0

STATE_DIR_MODE = 0o700  # a state_dir the daemon creates: the outbox and clips are its own
EXAMPLE_CONFIG = "monitor.example.yaml"  # package data of `monitor` (configs/monitor.example.yaml)


class ConfigError(WeldmonError):
    """The configuration is unusable; the message lists every problem, one per line."""


class _Section(StrictModel):
    """A section of the daemon's configuration (StrictModel: unknown keys are errors)."""


class ModelConfig(_Section):
    """The deploy artifact to load."""

    path: Path  # the TorchScript deploy artifact
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")  # pin: refuse other files


DEFAULT_SHADOW_QUEUE_WINDOWS = 32  # shadow windows waiting before more are skipped (load)
DEFAULT_SHADOW_TIMEOUT_S = 30.0  # a weld's shadow verdict waits this long for its windows


class ShadowConfig(_Section):
    """A second artifact that judges the same windows as `model`, after it, and only ever
    publishes on ``{prefix}/{station}/shadow/result`` (docs/operations.md, "Trying a model")."""

    path: Path  # the candidate deploy artifact
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")  # pin: refuse other files
    # windows waiting for the shadow's worker; more are skipped and counted, never waited for
    queue_windows: int = Field(DEFAULT_SHADOW_QUEUE_WINDOWS, ge=1, le=100_000)
    # longest a weld's shadow verdict waits for its windows after the production result (s)
    timeout_s: float = Field(DEFAULT_SHADOW_TIMEOUT_S, gt=0.0, le=3600.0)


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
    # the alert rule (deploy/alert_rule.py): this many consecutive windows confirmed inside
    # the weld at the alert threshold raise weld_alert, and make the result a defect
    alert_windows: int = Field(DEFAULT_ALERT_WINDOWS, ge=1, le=60)
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
    # auto: console on a terminal, json otherwise (systemd, pipes); json: one event per line,
    # for journald; console: for a person
    format: Literal["auto", "json", "console"] = "auto"


class MonitorConfig(_Section):
    """The whole `monitor.yaml`."""

    model: ModelConfig
    shadow: ShadowConfig | None = None  # a candidate model judged beside `model`, never alerting
    audio: AudioConfig = AudioConfig()
    segmentation: SegmentationConfig = SegmentationConfig()
    process: ProcessConfig = ProcessConfig()
    inference: InferenceConfig = InferenceConfig()
    events: EventsConfig = EventsConfig()
    mqtt: MqttConfig = MqttConfig()
    http: HttpConfig = HttpConfig()
    clips: ClipsConfig = ClipsConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    opcua: OpcUaConfig = OpcUaConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    teach_in: TeachInConfig = TeachInConfig()
    state_dir: Path
    logging: LoggingConfig = LoggingConfig()
    stop_timeout_s: float = Field(DEFAULT_STOP_TIMEOUT_S, gt=0.0, le=MAX_STOP_TIMEOUT_S)


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{key}: {msg}")
    return lines


def _model_file_problems(key: str, model: Any) -> list[str]:
    if not isinstance(model, str | Path):
        return []
    model = Path(model)
    if not model.is_file():
        return [f"{key}: no such file {model}"]
    if not os.access(model, os.R_OK):
        return [f"{key}: {model} is not readable"]
    return []


def _file_problems(model: Any, state: Any, *, create_state: bool, shadow: Any = None) -> list[str]:
    """Problems with the model files (production and shadow) and the state folder (any may
    be a raw YAML value when the schema failed: then only what is a path string is checked,
    and nothing is created)."""
    problems = _model_file_problems("model.path", model)
    problems += _model_file_problems("shadow.path", shadow)
    if not isinstance(state, str | Path):
        return problems
    state = Path(state)
    if not state.exists() and state.parent.is_dir():
        if not create_state:
            return problems  # it will be created once the rest is right
        # What systemd's StateDirectory= does: the daemon's own folder, private to it. A
        # missing parent is more likely a typo than a fresh box: that stays an error.
        try:
            state.mkdir(mode=STATE_DIR_MODE)
            state.chmod(STATE_DIR_MODE)  # mkdir's mode is masked by the umask
        except OSError as exc:
            problems.append(f"state_dir: cannot create {state} ({exc.strerror or exc})")
            return problems
    if not state.is_dir():
        parent = "" if state.parent.is_dir() else f" (nor its parent {state.parent})"
        problems.append(f"state_dir: no such directory {state}{parent}")
    elif not os.access(state, os.R_OK | os.W_OK | os.X_OK):
        problems.append(f"state_dir: {state} is not writable")
    return problems


def _extra_problems(cfg: MonitorConfig) -> list[str]:
    """Sections switched on whose optional dependencies are not installed."""
    if cfg.opcua.enabled and importlib.util.find_spec("asyncua") is None:
        return ["opcua.enabled: needs the opcua extra (pip install 'weldmon[opcua]')"]
    return []


def parse_config(
    data: Any,
    source: str = "config",
    *,
    check_files: bool = True,
    problems: list[str] | None = None,
    create_state: bool = True,
) -> MonitorConfig:
    """Validate already-parsed YAML; raises ConfigError listing every problem at once: the
    schema's, the files' (model, state_dir) and any `problems` the reader found before.
    A missing `state_dir` is created when all else is right, unless not `create_state`
    (`weldmon config check` creates nothing)."""
    problems = list(problems or [])
    if not isinstance(data, dict):
        raise ConfigError(
            "\n  ".join(
                [f"{source}: expected a mapping of sections, got {type(data).__name__}", *problems]
            )
        )
    cfg = None
    try:
        cfg = MonitorConfig.model_validate(data)
    except ValidationError as exc:
        problems += _format_errors(exc)
    if check_files:
        state: Any  # a raw YAML value when the schema failed
        if cfg is not None:
            model, state = cfg.model.path, cfg.state_dir
            shadow = cfg.shadow.path if cfg.shadow is not None else None
        else:
            model, shadow = _raw_path(data, "model"), _raw_path(data, "shadow")
            state = data.get("state_dir")
        create = create_state and cfg is not None and not problems
        problems += _file_problems(model, state, create_state=create, shadow=shadow)
        if cfg is not None:
            problems += _extra_problems(cfg)
    if problems or cfg is None:
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(problems))
    return cfg


def _raw_path(data: dict[str, Any], section: str) -> Any:
    found = data.get(section)
    return found.get("path") if isinstance(found, dict) else None


def example_config_text() -> str:
    """The example config installed with the package: every key, its default and why
    (``configs/monitor.example.yaml`` in the source tree)."""
    return importlib.resources.files("monitor").joinpath(EXAMPLE_CONFIG).read_text()


def standalone_config(model: Path) -> MonitorConfig:
    """Every section at its default, judging with `model`: what `weldmon replay --model` runs
    with when no config is given. Replay keeps no state, so `state_dir` (required for the
    daemon) is the temporary folder, never written."""
    data = {"model": {"path": str(model)}, "state_dir": tempfile.gettempdir()}
    cfg = parse_config(data, "--model", check_files=False)
    if not cfg.model.path.is_file():
        raise ConfigError(f"--model: no such file {cfg.model.path}")
    return cfg


def load_config(
    path: str | Path, *, check_files: bool = True, create_state: bool = True
) -> MonitorConfig:
    """Read and validate `path`; relative paths in it resolve against the file's folder.
    `create_state`: see `parse_config`."""
    path = Path(path)
    text = read_input_text(path, MAX_CONFIG_BYTES, "", ConfigError)
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    finally:
        loader.dispose()
    problems = list(loader.duplicates)
    if data is None:  # an empty file (or only comments)
        data = {}
        problems.append("the file holds no settings (see configs/monitor.example.yaml)")
    if isinstance(data, dict):
        data = _resolve_relative(data, path.parent)
    return parse_config(
        data, str(path), check_files=check_files, problems=problems, create_state=create_state
    )


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is recorded in
    `duplicates` (key and both lines) instead of the last one silently winning."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in first_line:
                self.duplicates.append(
                    f"{key}: duplicate key at line {line} (first at line {first_line[key]})"
                )
            elif isinstance(key, Hashable):
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _resolve_relative(data: dict[str, Any], base: Path) -> dict[str, Any]:
    # A config shipped beside its model ("model.path: model.pt") must not depend on the cwd.
    out = dict(data)
    for section in ("model", "shadow"):
        model = out.get(section)
        if isinstance(model, dict) and isinstance(model.get("path"), str):
            out[section] = {**model, "path": str(base / Path(model["path"]).expanduser())}
    if isinstance(out.get("state_dir"), str):
        out["state_dir"] = str(base / Path(out["state_dir"]).expanduser())
    return out
