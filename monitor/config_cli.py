"""`weldmon config check FILE` and `weldmon config example`.

`check` validates a monitor config the way `weldmon run` would at start-up and says every
problem at once (`monitor.config.load_config`: the schema, duplicate keys, the model file, the
state folder, extras a section needs), plus what the daemon would find next when it loads the
model: whether the file is a deploy artifact, whether it matches the sha256 pin, and whether
its format can run on this install. Nothing is created, run or connected to. Exit 0 when the
config would start, 2 when it would not.

`example` prints the documented example config installed with the package (every key, its
default and what it does).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from weldmon.cli import EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from monitor.config import MonitorConfig

PROG = "weldmon config"


def configure(parser: argparse.ArgumentParser) -> None:
    """The `check` and `example` actions."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate a monitor config: every problem at once (exit 0 ok, 2 not)",
        description="Validate FILE as `weldmon run` would, without starting anything: every "
        "problem at once, one line per key, then exit 0 (it would start) or 2 (it would not).",
    )
    check.add_argument("file", type=Path, metavar="FILE", help="monitor YAML")
    actions.add_parser(
        "example",
        help="print the documented example config (every key with its default)",
        description="Print the example monitor config installed with weldmon: every key, its "
        "default and what it does. Start a config with `weldmon config example > monitor.yaml`.",
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the exit code."""
    if args.action == "example":
        from monitor.config import example_config_text

        sys.stdout.write(example_config_text())
        return EXIT_OK
    return _check(args.file)


def _model_problems(cfg: MonitorConfig) -> list[str]:
    """What loading the model would refuse: not an artifact, another sha256 than the pin, a
    format this install cannot run. Read without running it (`deploy.artifact_info`)."""
    from deploy.artifact_info import artifact_info
    from deploy.errors import ArtifactError

    model, backend = cfg.model, cfg.inference.backend
    try:
        info = artifact_info(model.path)
    except ArtifactError as exc:
        return [f"model.path: {exc}"]
    problems = []
    if model.sha256 is not None and info["sha256"] != model.sha256.strip().lower():
        problems.append(
            f"model.sha256: pinned {model.sha256}, but {model.path} has sha256 {info['sha256']}"
        )
    if info["format"] == "torchscript":
        twin = info["onnx_twin"]
        runs_twin = backend == "onnx" or (backend == "auto" and twin["present"])
        if runs_twin and not twin["present"]:
            problems.append(
                f"inference.backend: onnx needs the ONNX twin {twin['path']} beside the .pt "
                "(weldmon convert)"
            )
        elif runs_twin and not twin.get("made_from_this_file"):
            problems.append(
                f"model.path: its ONNX twin {twin['path']} was not converted from it "
                "(convert it again or remove it)"
            )
        if not runs_twin and importlib.util.find_spec("torch") is None:
            problems.append(
                f"model.path: {model.path} is TorchScript and torch is not installed: install "
                "weldmon[torch], or put its ONNX twin beside it (weldmon convert)"
            )
    elif backend == "torchscript":
        problems.append("inference.backend: torchscript runs a .pt; model.path is a .onnx")
    return problems


def _check(path: Path) -> int:
    from monitor.config import ConfigError, load_config

    try:
        cfg = load_config(path, create_state=False)
    except ConfigError as exc:
        print(f"{PROG} check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problems = _model_problems(cfg)
    if problems:
        lines = "\n  ".join(problems)
        print(f"{PROG} check: {path}: invalid configuration:\n  {lines}", file=sys.stderr)
        return EXIT_USAGE
    stations = ", ".join(cfg.audio.station_names())
    print(
        f"{path}: ok (stations {stations}; segmentation {cfg.segmentation.mode}; "
        f"model {cfg.model.path}; mqtt {'on' if cfg.mqtt.enabled else 'off'})"
    )
    return EXIT_OK
