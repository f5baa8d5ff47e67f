"""structlog set-up: JSON on stderr, one event per line (journald keeps each line as one
entry), or a readable console format for a person at a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog
from tqdm import tqdm

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time of the write, not at configure time, so
    a process that swaps stderr (a test harness capturing output, a supervisor) never leaves
    the logger holding a closed stream."""

    def write(self, text: str) -> int:
        if tqdm._instances:
            # A progress bar is on the terminal: tqdm clears it, writes the line above it and
            # redraws it, so log lines never break a bar in two.
            tqdm.write(text.rstrip("\n"), file=sys.stderr)
            return len(text)
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR = _CurrentStderr()


def resolve_format(fmt: str) -> str:
    """``auto`` -> ``console`` when stderr is a terminal (a person runs the command), else
    ``json`` (systemd's journal, a pipe, a file: one event per line for machines)."""
    if fmt != "auto":
        return fmt
    interactive = sys.stderr.isatty() and "JOURNAL_STREAM" not in os.environ
    return "console" if interactive else "json"


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Route structlog (and the standard library's logging) to stderr at `level`, as `fmt`
    (``json``, ``console``, or ``auto``: see `resolve_format`)."""
    numeric = _LEVELS[level]
    fmt = resolve_format(fmt)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # _STDERR has the write/flush a TextIO needs, not the whole TextIO the stub asks for.
        logger_factory=structlog.PrintLoggerFactory(file=_STDERR),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Libraries that log through `logging` (aiomqtt, paho) land on stderr too, one per line.
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        stream=_STDERR,
        format="%(name)s %(message)s",
        force=True,
    )
