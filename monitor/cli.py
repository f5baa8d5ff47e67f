"""The monitor's `weldmon` subcommands: `run`, `replay`, `devices`, `watch`.

Nothing here imports torch at module level (the dispatcher imports this module for every
`weldmon run|replay|devices --help`); the heavy modules are imported inside `run`.
Exit codes: 0 ok, 1 something failed (a bad file in replay), 2 usage/config/model error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weldmon.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Command


def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="monitor YAML (see configs/)")


def _configure_replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="monitor YAML (see configs/)")
    parser.add_argument("inputs", nargs="+", metavar="FILE|DIR", help="recordings or folders")
    parser.add_argument(
        "--realtime", action="store_true", help="replay at real-time pace (default: full speed)"
    )
    parser.add_argument(
        "--segmentation",
        choices=("file", "gate"),
        default=None,
        help="one weld per file, or the arc gate (default: the config's mode; trigger -> file)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _configure_devices(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refresh", action="store_true", help="re-initialise PortAudio before listing"
    )


def _fail(message: str, code: int) -> int:
    print(f"weldmon: {message}", file=sys.stderr)
    return code


def _load(path: str):  # -> MonitorConfig; imports kept lazy
    from monitor.config import load_config
    from monitor.ops.logs import configure_logging

    cfg = load_config(path)
    configure_logging(cfg.logging.level, cfg.logging.format)
    return cfg


def _run_replay(args: argparse.Namespace) -> int:
    import asyncio

    from deploy.errors import WeldmonError
    from monitor.audio.files import expand_inputs
    from monitor.replay import replay_files
    from monitor.runtime import load_model

    try:
        cfg = _load(args.config)
        files = expand_inputs(args.inputs)
        if not files:
            return _fail(f"no audio files found in {args.inputs}", EXIT_USAGE)
        model = load_model(cfg)
    except WeldmonError as exc:
        return _fail(str(exc), EXIT_USAGE)
    summary = asyncio.run(
        replay_files(
            cfg,
            model,
            files,
            segmentation=args.segmentation,
            realtime=args.realtime,
            progress=False if args.no_progress else None,
        )
    )
    print(summary.line(), file=sys.stderr)
    return EXIT_FAILURE if summary.files_failed else EXIT_OK


def _run_daemon(args: argparse.Namespace) -> int:
    from deploy.errors import WeldmonError
    from monitor.daemon import run_daemon
    from monitor.runtime import load_model

    try:
        cfg = _load(args.config)
        model = load_model(cfg)
    except WeldmonError as exc:
        return _fail(str(exc), EXIT_USAGE)
    return run_daemon(cfg, model, Path(args.config))


def _run_devices(args: argparse.Namespace) -> int:
    from deploy.errors import WeldmonError
    from monitor.audio.devices import format_devices, list_input_devices

    try:
        print(format_devices(list_input_devices(refresh=args.refresh)))
    except WeldmonError as exc:
        return _fail(str(exc), EXIT_FAILURE)
    return EXIT_OK


# `watch` is `monitor.watch.app.COMMAND`, reached through these two lazy hops: importing it here
# would cost every `weldmon run|replay|devices` start about a second (aiomqtt, rich, pydantic).
def _configure_watch(parser: argparse.ArgumentParser) -> None:
    from monitor.watch.app import COMMAND

    COMMAND.configure(parser)


def _run_watch(args: argparse.Namespace) -> int:
    from monitor.watch.app import COMMAND

    return COMMAND.run(args)


COMMANDS: dict[str, Command] = {
    "run": Command(_configure_run, _run_daemon, "run the real-time monitor daemon"),
    "replay": Command(
        _configure_replay, _run_replay, "replay recorded files through the monitor pipeline"
    ),
    "devices": Command(
        _configure_devices, _run_devices, "list the audio input devices PortAudio sees"
    ),
    "watch": Command(
        _configure_watch, _run_watch, "live terminal view of the monitor's MQTT events"
    ),
}
