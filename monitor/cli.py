"""The monitor's `weldmon` subcommands: `run`, `replay`, `clips`, `devices`, `watch`,
`console`.

Nothing here imports torch at module level (the dispatcher imports this module for every
`weldmon run|replay|devices --help`); the heavy modules are imported inside `run`.
Exit codes: 0 ok, 1 something failed (a bad file in replay), 2 usage/config/model error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deploy.dataset_layout import LABEL_CODES, SIDECAR_SUFFIX
from weldmon.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Command


def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="monitor YAML (see configs/)")


def _configure_replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="monitor YAML (see configs/); optional with --model (defaults then)"
    )
    parser.add_argument(
        "--model", type=Path, help="deploy artifact to judge with (overrides the config's model)"
    )
    parser.add_argument("inputs", nargs="+", metavar="FILE|DIR", help="recordings or folders")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also publish the events to MQTT (own client id, no outbox, no status; every "
        "event marked replay: true); default: stdout only, never a broker",
    )
    parser.add_argument(
        "--broker",
        metavar="HOST[:PORT]",
        help="with --publish: the broker (default: the config's mqtt host and port)",
    )
    parser.add_argument(
        "--realtime", action="store_true", help="replay at real-time pace (default: full speed)"
    )
    parser.add_argument(
        "--segmentation",
        choices=("file", "crackle", "arc", "gate", "current"),
        default=None,
        help="one weld per file, the arc's crackle, the arc gate, or the arc current from the "
        "run's sensor log beside each file (default: the config's mode; trigger -> file)",
    )
    parser.add_argument(
        "--clips",
        type=Path,
        metavar="DIR",
        help="keep the judged welds' clips in DIR, in the daemon's clip layout, for review in "
        "`weldmon console --clips DIR` (which welds and how many: the config's clips section)",
    )
    parser.add_argument(
        "--clip-policy",
        choices=("defect", "all"),
        help="with --clips: keep the clips of welds judged defect, or of all welds "
        "(default: the config's clips.policy, defect unless set)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help="also draw each replayed file's segmentation figure into DIR (as `weldmon "
        "segment --plot`; needs matplotlib)",
    )


def _configure_segment(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="FILE|DIR", help="recordings or folders")
    parser.add_argument(
        "--mode",
        choices=("crackle", "arc", "gate", "current"),
        help="the segmenter (default: the config's mode, else crackle); current cuts by the "
        "sensor log beside each file",
    )
    parser.add_argument(
        "--config", help="monitor YAML whose segmentation settings to use (default: defaults)"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="OUT.png|DIR",
        help="draw each file's level, the segmenter's track, the cut welds and the arc "
        "current (one PNG per file; a .png path for a single file); needs matplotlib",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per weld")


def _run_segment(args: argparse.Namespace) -> int:
    from monitor.segment_cli import run_segment

    return run_segment(args)


def _configure_devices(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refresh", action="store_true", help="re-initialise PortAudio before listing"
    )


def _fail(command: str, message: str, code: int) -> int:
    print(f"weldmon {command}: {message}", file=sys.stderr)
    return code


def _load(path: str, *, check_files: bool = True):  # -> MonitorConfig; imports kept lazy
    from monitor.config import load_config
    from monitor.ops.logs import configure_logging

    cfg = load_config(path, check_files=check_files)
    configure_logging(cfg.logging.level, cfg.logging.format)
    return cfg


def _run_replay(args: argparse.Namespace) -> int:
    import asyncio

    from deploy.audio import expand_inputs
    from deploy.errors import WeldmonError
    from monitor.replay import replay_files
    from monitor.runtime import load_model

    try:
        cfg = _replay_config(args)
        publish = _replay_broker(args, cfg)
        clips = _replay_clips(args, cfg)
        files = expand_inputs(args.inputs)
        if not files:
            return _fail("replay", f"no audio files found in {args.inputs}", EXIT_USAGE)
        plot_cfg = _replay_plot_config(args, cfg)
        model = load_model(cfg)
    except WeldmonError as exc:
        return _fail("replay", str(exc), EXIT_USAGE)
    try:
        summary = asyncio.run(
            replay_files(
                cfg,
                model,
                files,
                segmentation=args.segmentation,
                realtime=args.realtime,
                progress=False if args.no_progress else None,
                publish=publish,
                clips_dir=args.clips,
                clips=clips,
            )
        )
    except KeyboardInterrupt:  # Ctrl-C: the lines already printed are whole results
        return _fail("replay", "interrupted; the results printed so far are complete", 1)
    print(summary.line(), file=sys.stderr)
    plots_failed = 0
    if plot_cfg is not None:
        from monitor.segment_cli import draw_figures

        plots_failed = draw_figures(plot_cfg, files, args.plot)
    return EXIT_FAILURE if summary.files_failed or plots_failed else EXIT_OK


def _replay_plot_config(args: argparse.Namespace, cfg):  # -> SegmentationConfig | None
    """The segmentation the figures of ``replay --plot`` show (None without --plot); raises
    WeldmonError when matplotlib is missing or the mode cuts no recording by itself."""
    if args.plot is None:
        return None
    from deploy.errors import WeldmonError
    from deploy.segment.modes import SegmentationMode
    from monitor.segment.factory import RULES
    from monitor.segment.plot import require_matplotlib
    from monitor.segment_cli import inspectable

    require_matplotlib()
    if args.plot.suffix.lower() == ".png":
        raise WeldmonError(f"--plot {args.plot}: replay draws into a folder, one PNG per file")
    mode = RULES[SegmentationMode(args.segmentation or cfg.segmentation.mode)].replay_as
    return inspectable(cfg.segmentation.model_copy(update={"mode": mode}))


def _replay_config(args: argparse.Namespace):  # -> MonitorConfig; imports kept lazy
    from monitor.config import ConfigError, standalone_config
    from monitor.ops.logs import configure_logging

    if args.config is None and args.model is None:
        raise ConfigError("give --config FILE or --model ARTIFACT (or both)")
    if args.config is None:
        cfg = standalone_config(args.model)
        configure_logging(cfg.logging.level, cfg.logging.format)
        return cfg
    # Replay keeps no state: the daemon's state_dir need not exist or be writable for it, and
    # the model is checked when it is loaded.
    cfg = _load(args.config, check_files=False)
    if args.model is not None:  # an explicit file: the config's pin is for its own model
        model = cfg.model.model_copy(update={"path": args.model, "sha256": None})
        cfg = cfg.model_copy(update={"model": model})
    return cfg


def _replay_broker(args: argparse.Namespace, cfg):  # -> MqttConfig | None
    from monitor.config import ConfigError

    if not args.publish:
        if args.broker is not None:
            raise ConfigError("--broker is only used with --publish")
        return None
    mqtt = cfg.mqtt
    if args.broker is not None:
        from monitor.watch.app import WatchError, parse_broker

        try:
            host, port = parse_broker(args.broker)
        except WatchError as exc:
            raise ConfigError(str(exc)) from exc
        mqtt = mqtt.model_copy(update={"host": host, "port": port})
    elif args.config is None:
        raise ConfigError("--publish without --config needs --broker HOST[:PORT]")
    return mqtt


def _replay_clips(args: argparse.Namespace, cfg):  # -> ClipsConfig | None
    from monitor.config import ConfigError

    if args.clips is None:
        if args.clip_policy is not None:
            raise ConfigError("--clip-policy is only used with --clips DIR")
        return None
    policy = args.clip_policy or cfg.clips.policy
    if policy == "none":
        raise ConfigError(
            "--clips with the config's clips.policy none would keep nothing: "
            "give --clip-policy defect or all"
        )
    if args.clips.exists() and not args.clips.is_dir():
        raise ConfigError(f"--clips: {args.clips} is not a folder")
    return cfg.clips.model_copy(update={"policy": policy})


def _run_daemon(args: argparse.Namespace) -> int:
    import asyncio

    import structlog

    from deploy.errors import WeldmonError
    from monitor.daemon import Daemon
    from monitor.publish.outbox import OutboxOpenError
    from monitor.runtime import load_model, load_shadow

    try:
        cfg = _load(args.config)
        model = load_model(cfg)
        shadow = load_shadow(cfg, model)
    except WeldmonError as exc:
        return _fail("run", str(exc), EXIT_USAGE)
    try:  # a fresh event loop; SIGHUP and cmd/reload re-read --config
        return asyncio.run(Daemon(cfg, model, Path(args.config), shadow).run())
    except WeldmonError as exc:
        structlog.get_logger("monitor.daemon").error("daemon_failed", error=str(exc))
        # A corrupt outbox fails before any weld, and a restart would meet the same file.
        code = EXIT_USAGE if isinstance(exc, OutboxOpenError) else EXIT_FAILURE
        return _fail("run", str(exc), code)


def _run_devices(args: argparse.Namespace) -> int:
    from deploy.errors import WeldmonError
    from monitor.audio.devices import format_devices, list_input_devices

    try:
        print(format_devices(list_input_devices(refresh=args.refresh)))
    except WeldmonError as exc:
        return _fail("devices", str(exc), EXIT_FAILURE)
    return EXIT_OK


# `watch` is `monitor.watch.app.COMMAND`, reached through these two lazy hops: importing it here
# would cost every `weldmon run|replay|devices` start about a second (aiomqtt, rich, pydantic).
def _configure_watch(parser: argparse.ArgumentParser) -> None:
    from monitor.watch.app import COMMAND

    COMMAND.configure(parser)


def _run_watch(args: argparse.Namespace) -> int:
    from monitor.watch.app import COMMAND

    return COMMAND.run(args)


# -- `weldmon clips list|promote`: the kept defect clips and promoting a reviewed one into a
# dataset (`deploy.dataset_layout.promote_clip`); reads the config for state_dir and clips only.

CLIPS_PREFIX = "weldmon clips:"  # `weldmon clips` messages on stderr


def _configure_clips(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="unreviewed clips, oldest first")
    listing.add_argument("--config", required=True, help="the daemon's monitor YAML")
    listing.add_argument("--station", help="only this station's clips")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    promote = sub.add_parser("promote", help="move a reviewed clip into a dataset")
    promote.add_argument("--config", required=True, help="the daemon's monitor YAML")
    promote.add_argument("clip", help="weld_id of the clip, or its folder")
    promote.add_argument("--dataset", required=True, type=Path, help="dataset root")
    promote.add_argument(
        "--config-folder", required=True, help="the recording session's folder name"
    )
    promote.add_argument(
        "--label",
        required=True,
        choices=sorted(LABEL_CODES),
        help="the reviewer's verdict: " + ", ".join(f"{c} {n}" for c, n in LABEL_CODES.items()),
    )


def _clip_store(config: str):  # -> ClipStore; imports kept lazy
    from monitor.config import load_config
    from monitor.ops.clips import ClipStore

    cfg = load_config(config, check_files=False)
    return ClipStore(cfg.state_dir, cfg.clips)


def _unreviewed(store, station: str | None = None) -> list[Path]:  # store: ClipStore
    clips = sorted(store.stored_clips(), key=lambda c: (c.mtime, c.folder.name))
    return [c.folder for c in clips if station is None or c.folder.parent.name == station]


def _summary(folder: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"weld_id": folder.name, "station": folder.parent.name}
    try:
        result = json.loads((folder / f"{folder.name}{SIDECAR_SUFFIX}").read_text())["result"]
        row.update({k: result.get(k) for k in ("ended_at", "label_name", "p_defect")})
    except (OSError, ValueError, KeyError, TypeError):
        row["sidecar"] = "missing or unreadable"
    row["path"] = str(folder)
    return row


def _run_clips(args: argparse.Namespace) -> int:
    from deploy.dataset_layout import ClipError, promote_clip
    from deploy.errors import WeldmonError

    try:
        store = _clip_store(args.config)
    except WeldmonError as exc:
        print(f"{CLIPS_PREFIX} {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "list":
        for folder in _unreviewed(store, args.station):
            row = _summary(folder)
            print(json.dumps(row) if args.json else "\t".join(str(v) for v in row.values()))
        return EXIT_OK
    folder = Path(args.clip)
    if not folder.is_dir():
        matches = [f for f in _unreviewed(store) if f.name == args.clip]
        if len(matches) != 1:
            print(
                f"{CLIPS_PREFIX} no unreviewed clip {args.clip!r} in {store.clips_dir}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        folder = matches[0]
    try:
        flac = promote_clip(folder, args.dataset, args.config_folder, args.label)
    except ClipError as exc:
        print(f"{CLIPS_PREFIX} {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(flac)
    return EXIT_OK


# `console` likewise (`monitor.console.cli.COMMAND`): Starlette, uvicorn, Jinja2 and
# matplotlib are the `console` extra, imported only when the console runs; without them the
# command says which extra to install instead of a traceback.
def _console_command() -> Command:
    try:
        from monitor.console.cli import COMMAND
    except ModuleNotFoundError as exc:
        print(
            f"weldmon console: needs the console extra ({exc.name} is not installed): "
            "pip install 'weldmon[console]'",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE) from exc
    return COMMAND


def _configure_console(parser: argparse.ArgumentParser) -> None:
    _console_command().configure(parser)


def _run_console(args: argparse.Namespace) -> int:
    return _console_command().run(args)


def _configure_train_segmenter(parser: argparse.ArgumentParser) -> None:
    from monitor.segment_train_cli import configure

    configure(parser)


def _run_train_segmenter(args: argparse.Namespace) -> int:
    from monitor.segment_train_cli import run

    return run(args)


def _configure_config(parser: argparse.ArgumentParser) -> None:
    from monitor.config_cli import configure

    configure(parser)


def _run_config(args: argparse.Namespace) -> int:
    from monitor.config_cli import run

    return run(args)


def _configure_model(parser: argparse.ArgumentParser) -> None:
    from monitor.model_cli import configure

    configure(parser)


def _run_model(args: argparse.Namespace) -> int:
    from monitor.model_cli import run

    return run(args)


def _configure_teach(parser: argparse.ArgumentParser) -> None:
    from monitor.teach_cli import configure

    configure(parser)


def _run_teach(args: argparse.Namespace) -> int:
    from monitor.teach_cli import run

    return run(args)


COMMANDS: dict[str, Command] = {
    "run": Command(_configure_run, _run_daemon, "run the real-time monitor daemon"),
    "replay": Command(
        _configure_replay, _run_replay, "replay recorded files through the monitor pipeline"
    ),
    "segment": Command(
        _configure_segment,
        _run_segment,
        "show where a segmenter cuts each recording's welds, beside the arc current when a "
        "sensor log sits next to it; --plot draws why",
    ),
    "train-segmenter": Command(
        _configure_train_segmenter,
        _run_train_segmenter,
        "train the arc segmenter's classifier on recordings whose arc current is logged",
    ),
    "clips": Command(
        _configure_clips, _run_clips, "list the kept defect clips, promote one into a dataset"
    ),
    "devices": Command(
        _configure_devices, _run_devices, "list the audio input devices PortAudio sees"
    ),
    "watch": Command(
        _configure_watch, _run_watch, "live terminal view of the monitor's MQTT events"
    ),
    "console": Command(
        _configure_console, _run_console, "web console: live fleet, weld history, clip review"
    ),
    "config": Command(
        _configure_config, _run_config, "check a monitor config, or print the example one"
    ),
    "model": Command(
        _configure_model,
        _run_model,
        "Inspect a deploy artifact, or promote / roll back a running daemon's model.",
    ),
    "teach": Command(
        _configure_teach,
        _run_teach,
        "Commission a station: teach its threshold from its own good welds on a running daemon.",
    ),
}
