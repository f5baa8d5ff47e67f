"""The `weldmon` command: one entry point, subcommands owned by the packages.

Each package keeps its own subcommands in a `cli` module exposing
``COMMANDS: dict[str, Command]``. This dispatcher knows only their names and one-line help,
and imports a package's module when its subcommand runs, so `weldmon --help` never imports
torch and stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from weldmon import __version__


@dataclass(frozen=True)
class Command:
    """One subcommand: how to declare its arguments and how to run it (returns the exit code)."""

    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


# name -> (module holding COMMANDS, one-line help). Order is the order shown in --help.
REGISTRY: dict[str, tuple[str, str]] = {
    "predict": ("deploy.cli", "judge one recording (or one window of it) with a deploy artifact"),
    "scan": ("deploy.cli", "batch-score files and window offsets into CSV/JSON"),
    "convert": ("deploy.cli", "write the ONNX twin of a .pt deploy artifact"),
    "model": (
        "monitor.cli",
        "inspect a deploy artifact; promote or roll back a running daemon's model",
    ),
    "train": ("training.cli", "train the MIL CNN from a labelled dataset"),
    "cv": ("training.cli", "leave-one-config-folder-out cross-validation (small data)"),
    "export": ("training.cli", "export a checkpoint as the deploy artifact (.pt and .onnx)"),
    "evaluate": ("training.cli", "evaluate a deploy artifact on a labelled dataset"),
    "sweep": ("training.cli", "run the tuning protocol and rank configs by F1_DEFECT"),
    "enroll": ("training.cli", "build a deploy artifact from a cell's good welds (anomaly mode)"),
    "run": ("monitor.cli", "run the real-time monitor daemon"),
    "replay": ("monitor.cli", "replay recorded files through the monitor pipeline"),
    "segment": ("monitor.cli", "where a segmenter cuts each recording's welds, and why (--plot)"),
    "train-segmenter": (
        "monitor.cli",
        "train the arc segmenter on recordings whose arc current is logged",
    ),
    "clips": ("monitor.cli", "list the kept defect clips, promote one into a dataset"),
    "devices": ("monitor.cli", "list the audio input devices PortAudio sees"),
    "watch": ("monitor.cli", "live terminal view of the monitor's MQTT events"),
    "console": ("monitor.cli", "web console: live fleet, weld history, clip review"),
    "config": ("monitor.cli", "check a monitor config (every problem at once), print the example"),
    "teach": ("monitor.cli", "commission a station: teach its threshold on a running daemon"),
}

# One short example per command, shown at the end of its --help.
EXAMPLES: dict[str, str] = {
    "predict": "weldmon predict --model deploy_single_label.onnx weld.flac",
    "scan": "weldmon scan --model deploy_single_label.onnx --output scan/ shift/*.flac",
    "convert": "weldmon convert --model deploy_single_label.pt",
    "model": "weldmon model info deploy_single_label.onnx",
    "teach": "weldmon teach start --daemon /etc/weldmon/weldmon.yaml --station cell1",
    "train": "weldmon train --config configs/train.example.yaml --data-root DATA --run-dir runs/a",
    "cv": "weldmon cv --config configs/train.example.yaml --data-root DATA --output runs/cv",
    "export": "weldmon export --checkpoint runs/a/best_model.pt "
    "--output runs/a/deploy_single_label.pt --name 'line3 fillet' --model-version 1",
    "evaluate": "weldmon evaluate --model runs/a/deploy_single_label.pt --data-root DATA "
    "--split runs/a/split.json --output runs/a/report",
    "sweep": "weldmon sweep --config configs/sweep.example.yaml",
    "enroll": "weldmon enroll --data-root CELL_GOOD_WELDS --output cell.pt --false-alarm-rate 0.01",
    "run": "weldmon run --config /etc/weldmon/weldmon.yaml",
    "replay": "weldmon replay --config monitor.yaml --segmentation gate shift.flac",
    "segment": "weldmon segment --plot figures/ shift/*.flac",
    "train-segmenter": "weldmon train-segmenter --data-root CELL_RECORDINGS --output arc.json",
    "clips": "weldmon clips list --config /etc/weldmon/weldmon.yaml",
    "devices": "weldmon devices",
    "watch": "weldmon watch --broker broker.plant.local",
    "console": "weldmon console --broker broker.plant.lan --prefix plant1/+ "
    "--db /var/lib/weldmon/console.sqlite3 --clips /var/lib/weldmon/clips",
    "config": "weldmon config check /etc/weldmon/weldmon.yaml",
}

# Exit codes shared by every subcommand.
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran but something failed (e.g. some files could not be read)
EXIT_USAGE = 2  # bad arguments or configuration: nothing was done
EXIT_CODES_HELP = "exit codes: 0 ok, 1 something failed, 2 bad arguments, config or model"
GLOSSARY_HELP = (
    "terms (MIL, top-k, p_defect, ECE, PR_AUC, TUNED-ON, mode A/B, ONNX twin, kurtosis...): "
    "docs/glossary.md"
)

_running: list[str] = []  # the subcommand `main` is running (for `fail`'s prefix)


def message_prefix() -> str:
    """``weldmon <cmd>:``, the prefix of every message a subcommand writes to stderr."""
    return f"weldmon {_running[-1]}:" if _running else "weldmon:"


def fail(message: str, code: int) -> int:
    """Write `message` to stderr as ``weldmon <cmd>: message``; return `code` (the exit code)."""
    print(f"{message_prefix()} {message}", file=sys.stderr)
    return code


def add_output_argument(
    parser: argparse.ArgumentParser, *older: str, dest: str = "output", **kwargs: Any
) -> None:
    """The one spelling of an output path: ``--output``, with ``--out`` (and any `older`
    names a command used before) as aliases."""
    parser.add_argument("--output", "--out", *older, dest=dest, **kwargs)


def sentence(text: str) -> str:
    """A command's description as one sentence (capital first, full stop last), whichever
    package wrote it: every ``--help`` opens the same way."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?", ")")) else f"{text}."


def _top_parser(names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weldmon",
        description="Acoustic weld-defect monitor: train, export, judge and monitor welds.",
        epilog=GLOSSARY_HELP,
    )
    parser.add_argument("--version", action="version", version=f"weldmon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in names:
        sub.add_parser(name, help=REGISTRY[name][1])
    return parser


def main(argv: Sequence[str] | None = None, *, package: str | None = None) -> int:
    """Run `weldmon [COMMAND] ...`; with `package`, only that package's commands exist."""
    args = list(sys.argv[1:] if argv is None else argv)
    names = [n for n, (mod, _) in REGISTRY.items() if package is None or mod == f"{package}.cli"]
    if not args or args[0] not in names:
        parser = _top_parser(names)
        if package is not None:
            parser.prog = f"python -m {package}"
        parser.parse_args(args)  # prints help / version / an unknown-command error and exits
        parser.print_help()
        return EXIT_USAGE
    name, rest = args[0], args[1:]
    module = importlib.import_module(REGISTRY[name][0])
    command: Command = module.COMMANDS[name]
    prog = f"weldmon {name}" if package is None else f"python -m {package} {name}"
    example = EXAMPLES[name].replace("weldmon ", f"{prog.rsplit(' ', 1)[0]} ", 1)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=sentence(command.description or REGISTRY[name][1]),
        epilog=f"example:\n  {example}\n\n{EXIT_CODES_HELP}\n{GLOSSARY_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.configure(parser)
    _running.append(name)
    try:
        return command.run(parser.parse_args(rest))
    except BrokenPipeError:
        return _reader_went_away()
    finally:
        _running.pop()


def _reader_went_away() -> int:
    """stdout's reader closed the pipe (`weldmon model info M | head`): stop quietly, as
    other command-line tools do, and point stdout at /dev/null so that Python's flush at
    exit does not raise (and print) the same error again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_FAILURE


if __name__ == "__main__":
    # `python -m weldmon.cli` runs this file as __main__, a second copy of the module; the
    # subcommands import `weldmon.cli`, so run that one's main (the running command's name
    # lives there, for their message prefix).
    from weldmon.cli import main as _main

    sys.exit(_main())
