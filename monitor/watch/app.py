"""`weldmon watch`: a live terminal view of every station, read only from MQTT.

It subscribes to ``{prefix}/#`` on any broker the daemon publishes to, so it runs on any
machine that can reach the broker (no model, no audio, no torch). The state rules and the
reconnect loop (capped, jittered back-off) are the live-view core's (``monitor.live``),
shared with the console; the screen says when the watcher itself is disconnected and when
it will try again, so a frozen figure is never mistaken for a quiet line.

Layers: ``monitor.live`` (state rules, feed) <- ``monitor.watch.state`` (one prefix of it)
<- this module (CLI, screen loop) -> ``monitor.watch.view`` (rich rendering).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.live import Live

import monitor.publish.settings as settings
from deploy.errors import WeldmonError
from monitor.events import DEFAULT_TOPIC_PREFIX
from monitor.live.feed import BrokerOptions, follow
from monitor.live.state import ConnectionState
from monitor.watch.state import (
    DEFAULT_HISTORY,
    WatchState,
    apply_connection,
    apply_message,
    initial_state,
)
from monitor.watch.view import render
from weldmon.cli import EXIT_OK, EXIT_USAGE, Command

REFRESH_S = 0.25  # screen redraws; also advances the elapsed time of a running weld


class WatchError(WeldmonError):
    """`weldmon watch` cannot start (bad --broker, unreadable password or CA file)."""


@dataclass(frozen=True)
class WatchOptions:
    """Where to connect and what to show."""

    host: str
    port: int
    prefix: str = DEFAULT_TOPIC_PREFIX
    username: str | None = None
    password: str | None = None
    tls_context: ssl.SSLContext | None = None
    history: int = DEFAULT_HISTORY

    def broker_options(self) -> BrokerOptions:
        """The connection part, as the live core's feed takes it (a clean session)."""
        return BrokerOptions(self.host, self.port, self.username, self.password, self.tls_context)

    @property
    def broker(self) -> str:
        return self.broker_options().label


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port)."""
    return settings.parse_broker(text, WatchError)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Watcher:
    """Holds the current :class:`WatchState` and keeps it fed from the broker.

    ``run()`` never returns on its own: it reconnects until cancelled (the live core's one
    loop, ``monitor.live.feed.follow``). ``on_change`` is called (on the event loop) after
    every state change.
    """

    def __init__(
        self,
        options: WatchOptions,
        on_change: Callable[[WatchState], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.state = initial_state(options.prefix, options.broker, options.history)
        self._on_change = on_change
        self._rng = rng

    def _set(self, state: WatchState) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(state)

    def _link(
        self, conn_state: ConnectionState, retry_in_s: float | None, error: str | None
    ) -> None:
        self._set(
            apply_connection(self.state, conn_state, _utc_now(), retry_in_s=retry_in_s, error=error)
        )

    async def _message(self, topic: str, payload: bytes) -> None:
        self._set(apply_message(self.state, topic, payload, _utc_now()))

    async def run(self) -> None:
        """Subscribe, apply every message, reconnect with back-off on any MQTT failure."""
        await follow(
            self.options.broker_options(),
            [self.state.pattern.subscription],
            self._link,
            self._message,
            self._rng,
        )


async def watch_screen(options: WatchOptions, console: Console | None = None) -> None:
    """Run the live screen until cancelled (Ctrl-C, SIGTERM)."""
    watcher = Watcher(options)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    console = console or Console()
    with Live(
        render(watcher.state, _utc_now()),
        console=console,
        auto_refresh=False,
        screen=True,
        vertical_overflow="crop",
    ) as live:
        feed = asyncio.create_task(watcher.run())
        try:
            while not feed.done():
                live.update(render(watcher.state, _utc_now()), refresh=True)
                await asyncio.sleep(REFRESH_S)
            feed.result()
        finally:
            feed.cancel()
            await asyncio.gather(feed, return_exceptions=True)


def options_from_args(args: argparse.Namespace) -> WatchOptions:
    """Validate the command line into :class:`WatchOptions`; raises WatchError."""
    host, port = parse_broker(args.broker)
    if args.password_file and not args.username:
        raise WatchError("--password-file needs --username")
    password = (
        settings.read_secret(args.password_file, "--password-file", WatchError)
        if args.password_file
        else None
    )
    tls_context = None
    if args.tls or args.tls_ca:
        try:
            tls_context = ssl.create_default_context(cafile=args.tls_ca)
        except (ssl.SSLError, OSError) as exc:
            raise WatchError(f"--tls-ca: cannot load {args.tls_ca}: {exc}") from exc
    if any(c in args.prefix for c in "+#") or args.prefix.strip("/") != args.prefix:
        raise WatchError(f"--prefix: must be a plain topic, got {args.prefix!r}")
    if args.history < 1:
        raise WatchError(f"--history: must be at least 1, got {args.history}")
    return WatchOptions(host, port, args.prefix, args.username, password, tls_context, args.history)


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare `weldmon watch`'s arguments."""
    parser.add_argument("--broker", required=True, metavar="HOST[:PORT]", help="MQTT broker")
    parser.add_argument(
        "--prefix",
        default=DEFAULT_TOPIC_PREFIX,
        help="topic prefix of the daemon (default %(default)s)",
    )
    parser.add_argument("--username", help="MQTT username")
    parser.add_argument("--password-file", metavar="FILE", help="file holding the MQTT password")
    parser.add_argument("--tls", action="store_true", help="TLS with the system's CA store")
    parser.add_argument("--tls-ca", metavar="FILE", help="TLS, trusting this CA file")
    parser.add_argument(
        "--history", type=int, default=DEFAULT_HISTORY, help="verdicts shown per station"
    )


def run(args: argparse.Namespace) -> int:
    """Run `weldmon watch` until Ctrl-C; 0 on a normal quit, 2 on bad arguments."""
    try:
        options = options_from_args(args)
    except WatchError as exc:
        print(f"weldmon watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Ctrl-C and SIGTERM are how an operator quits: a normal exit, not an error.
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(watch_screen(options))
    return EXIT_OK


COMMAND = Command(configure, run, "live terminal view of the monitor's MQTT events")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monitor.watch ...``: the same as ``weldmon watch ...``."""
    parser = argparse.ArgumentParser(prog="weldmon watch", description=COMMAND.description)
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
