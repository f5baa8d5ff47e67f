"""structlog set-up: JSON on stderr, one event per line (journald keeps each line as one
entry), or a readable console format for a person at a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

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
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR = _CurrentStderr()


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route structlog (and the standard library's logging) to stderr at `level`."""
    numeric = _LEVELS[level]
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
