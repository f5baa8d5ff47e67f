"""`weldmon console`: the web console as its own process.

    weldmon console --broker HOST:PORT --prefix P [--prefix Q/+] --listen 127.0.0.1:8080
                    --db FILE [--clips DIR] [--dataset DIR] [--config monitor.yaml]

The MQTT loop, the retention task and the HTTP server (uvicorn) share one event loop; the
history lives on its own thread. Ctrl-C or SIGTERM stops it cleanly (exit 0); bad arguments,
an unsafe listen address or an unusable history file exit 2 before anything is served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import re
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
import yaml
from pydantic import ValidationError

import monitor.publish.settings as settings
from deploy.errors import WeldmonError
from deploy.inputs import MAX_CONFIG_BYTES, check_input_file, read_input_text
from monitor.console.clipfiles import ClipFolders
from monitor.console.fleet import COMMAND_LINE_MUTE, DEFAULT_HISTORY, Fleet
from monitor.console.ingest import Ingest
from monitor.console.security import (
    CsrfGuard,
    ListenAddress,
    allowed_hosts,
    check_exposure,
    parse_listen,
    read_auth_file,
)
from monitor.console.state import ConsoleState, seed_from_history
from monitor.console.store import (
    DEFAULT_MAX_WELDS,
    DEFAULT_RETENTION_DAYS,
    ConsoleDb,
    StoreError,
    WeldStore,
)
from monitor.console.web import create_app
from monitor.events import DEFAULT_TOPIC_PREFIX, STATION_PATTERN
from monitor.live.feed import BrokerOptions
from monitor.live.topics import PrefixError, PrefixPattern, parse_prefix
from monitor.publish.settings import MqttConfig
from weldmon.cli import EXIT_OK, EXIT_USAGE, Command

RETENTION_EVERY_S = 3600.0
LISTEN_BACKLOG = 128
SHUTDOWN_GRACE_S = 3  # open live streams are closed after this on Ctrl-C / SIGTERM
PREFIX = "weldmon console:"


class ConsoleError(WeldmonError):
    """`weldmon console` cannot start with these arguments."""


@dataclass(frozen=True)
class ConsoleOptions:
    """Everything validated from the command line (and ``--config``)."""

    broker: BrokerOptions
    patterns: list[PrefixPattern]
    listen: ListenAddress
    db: Path
    clips: Path | None
    dataset: Path | None
    users: dict[str, str] | None
    hosts: list[str]
    retention_days: float
    max_welds: int
    history: int
    tls_cert: Path | None
    tls_key: Path | None
    mutes: tuple[tuple[str, str], ...] = ()  # (prefix, station) muted by --mute
    alert_cooldown_s: float = 0.0


def parse_station(text: str) -> tuple[str, str]:
    """``PREFIX/STATION`` (the prefix may hold '/') -> (prefix, station)."""
    prefix, _, station = text.rpartition("/")
    if not prefix or not re.fullmatch(STATION_PATTERN, station):
        raise ConsoleError(f"--mute: give PREFIX/STATION (e.g. plant1/line3/cell1), got {text!r}")
    return prefix, station


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port)."""
    return settings.parse_broker(text, ConsoleError)


def _mqtt_from_config(path: str) -> MqttConfig:
    """The ``mqtt:`` section of a monitor config (broker, credentials, TLS, prefix)."""
    try:
        data = (
            yaml.safe_load(read_input_text(Path(path), MAX_CONFIG_BYTES, "--config", ConsoleError))
            or {}
        )
        section = data.get("mqtt", {}) if isinstance(data, dict) else None
        if not isinstance(section, dict):
            raise ConsoleError(f"--config {path}: no mqtt: mapping")
        tls = section.get("tls")
        if isinstance(tls, dict):  # relative certificate paths are relative to the config
            base = Path(path).parent
            section = {
                **section,
                "tls": {
                    k: str(base / v) if k.endswith("_file") and isinstance(v, str) else v
                    for k, v in tls.items()
                },
            }
        return MqttConfig.model_validate(section)
    except OSError as exc:
        raise ConsoleError(f"--config: cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConsoleError(f"--config {path}: not valid YAML ({exc})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConsoleError(f"--config {path}: mqtt.{where}: {first['msg']}") from exc


def _tls_context(cafile: str | None, cert: str | None, key: str | None, insecure: bool):
    try:
        context = ssl.create_default_context(cafile=cafile)
        if cert and key:
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConsoleError(f"TLS: cannot load certificates: {exc}") from exc
    context.check_hostname = not insecure  # as the daemon: still verifies the chain
    return context


def _check_server_tls(cert: str, key: str) -> None:
    """Load the HTTPS certificate and key as uvicorn will, so that files that are missing,
    not PEM or not a pair are refused before anything starts (not with uvicorn's traceback)."""
    for name, path in (("--tls-cert", cert), ("--tls-key", key)):
        check_input_file(Path(path), MAX_CONFIG_BYTES, name, ConsoleError)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConsoleError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its private key "
            f"({exc.reason or exc})"
        ) from exc
    except OSError as exc:
        raise ConsoleError(f"--tls-cert/--tls-key: cannot read ({exc.strerror or exc})") from exc


def _client_id(args: argparse.Namespace, db: Path) -> str | None:
    if args.client_id == "":
        return None  # a random id and a clean session
    if args.client_id:
        return args.client_id
    # One history file, one broker session: the broker queues what arrives while we restart.
    digest = hashlib.sha256(str(db.resolve()).encode()).hexdigest()[:10]
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"weldmon-console-{host[:24]}-{digest}"


def options_from_args(args: argparse.Namespace) -> ConsoleOptions:
    """Validate the command line; raises ConsoleError / ConsoleSecurityError / PrefixError."""
    mqtt = _mqtt_from_config(args.config) if args.config else None
    if args.broker:
        host, port = parse_broker(args.broker)
    elif mqtt is not None:
        host, port = mqtt.host, mqtt.port
    else:
        raise ConsoleError("--broker is required (or --config with an mqtt: section)")
    username = args.username or (mqtt.username if mqtt else None)
    if args.password_file and not username:
        raise ConsoleError("--password-file needs --username")
    password = (
        settings.read_secret(args.password_file, "--password-file", ConsoleError)
        if args.password_file
        else None
    )
    if password is None and mqtt is not None and mqtt.password is not None and not args.username:
        password = mqtt.password.get_secret_value()
    tls = None
    if args.tls or args.tls_ca:
        tls = _tls_context(args.tls_ca, None, None, False)
    elif mqtt is not None and mqtt.tls.enabled:
        t = mqtt.tls
        tls = _tls_context(
            str(t.ca_file) if t.ca_file else None,
            str(t.cert_file) if t.cert_file else None,
            str(t.key_file) if t.key_file else None,
            t.insecure,
        )
    texts = args.prefix or [mqtt.topic_prefix if mqtt else DEFAULT_TOPIC_PREFIX]
    patterns = [parse_prefix(t) for t in dict.fromkeys(texts)]
    listen = parse_listen(args.listen)
    users = read_auth_file(Path(args.auth_file)) if args.auth_file else None
    check_exposure(listen, users)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConsoleError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        _check_server_tls(args.tls_cert, args.tls_key)
    if args.retention_days <= 0 or args.max_welds < 1 or args.history < 1:
        raise ConsoleError("--retention-days, --max-welds and --history must be positive")
    if not math.isfinite(args.alert_cooldown) or args.alert_cooldown < 0:
        raise ConsoleError("--alert-cooldown must be a number of seconds, 0 or more")
    mutes = tuple(dict.fromkeys(parse_station(t) for t in args.mute or []))
    db = Path(args.db)
    for name, folder in (("--clips", args.clips), ("--dataset", args.dataset)):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise ConsoleError(f"{name}: {folder} is not a folder")
    return ConsoleOptions(
        broker=BrokerOptions(host, port, username, password, tls, _client_id(args, db)),
        patterns=patterns,
        listen=listen,
        db=db,
        clips=Path(args.clips) if args.clips else None,
        dataset=Path(args.dataset) if args.dataset else None,
        users=users,
        hosts=allowed_hosts(listen, args.allowed_host or []),
        retention_days=args.retention_days,
        max_welds=args.max_welds,
        history=args.history,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        mutes=mutes,
        alert_cooldown_s=args.alert_cooldown,
    )


def _bind(listen: ListenAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(LISTEN_BACKLOG)  # connections queue from here on, before uvicorn starts
    except OSError as exc:
        sock.close()
        raise ConsoleError(
            f"--listen: cannot listen on {listen.url_host}:{listen.port}: {exc.strerror or exc}"
        ) from exc
    sock.set_inheritable(True)
    return sock


async def _retention(db: ConsoleDb) -> None:
    while True:
        with contextlib.suppress(StoreError, OSError):
            await db.call(WeldStore.apply_retention, datetime.now(UTC))
        await asyncio.sleep(RETENTION_EVERY_S)


async def serve(options: ConsoleOptions, sock: socket.socket, store: WeldStore) -> None:
    """Run the console until uvicorn is asked to stop (Ctrl-C, SIGTERM)."""
    db = ConsoleDb(store)
    fleet = Fleet(options.broker.label, options.history, options.alert_cooldown_s)
    for prefix, station in options.mutes:
        fleet.set_muted(prefix, station, COMMAND_LINE_MUTE)
    for pattern in options.patterns:
        if not pattern.wildcard:
            fleet.group(pattern.text)  # shown as "no status yet" before anything arrives
    state = ConsoleState(
        fleet=fleet,
        db=db,
        folders=ClipFolders(options.clips, options.dataset),
        csrf=CsrfGuard(),
        users=options.users,
    )
    await seed_from_history(state, options.history)
    ingest = Ingest(options.broker, options.patterns, fleet, db, state.changed)
    state.ingest = ingest
    app = create_app(state, options.hosts)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        ssl_certfile=str(options.tls_cert) if options.tls_cert else None,
        ssl_keyfile=str(options.tls_key) if options.tls_key else None,
        limit_concurrency=200,  # the HTTP side stays bounded; MQTT is on its own task
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    tasks = [asyncio.create_task(ingest.run()), asyncio.create_task(_retention(db))]
    scheme = "https" if options.tls_cert else "http"
    port = sock.getsockname()[1]
    subscribed = " ".join(p.subscription for p in options.patterns)
    print(
        f"{PREFIX} serving {scheme}://{options.listen.url_host}:{port}/ "
        f"(broker {options.broker.label}, {subscribed}, history {options.db})",
        file=sys.stderr,
        flush=True,
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        db.close()


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare `weldmon console`'s arguments."""
    mq = parser.add_argument_group("broker (as `weldmon watch`)")
    mq.add_argument("--broker", metavar="HOST[:PORT]", help="MQTT broker")
    mq.add_argument(
        "--prefix",
        action="append",
        metavar="P",
        help=f"daemon topic prefix; repeat it, or end it in /+ for every daemon one level "
        f"below (default {DEFAULT_TOPIC_PREFIX}, or the --config's)",
    )
    mq.add_argument(
        "--config",
        metavar="FILE",
        help="read broker, credentials and TLS from this monitor config's mqtt: section",
    )
    mq.add_argument("--username", help="MQTT username")
    mq.add_argument("--password-file", metavar="FILE", help="file holding the MQTT password")
    mq.add_argument("--tls", action="store_true", help="TLS with the system's CA store")
    mq.add_argument("--tls-ca", metavar="FILE", help="TLS, trusting this CA file")
    mq.add_argument(
        "--client-id",
        help="MQTT client id of the console's persistent session (default: derived from "
        "host and --db; '' for a random id and no session)",
    )
    web = parser.add_argument_group("web")
    web.add_argument(
        "--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="default %(default)s"
    )
    web.add_argument(
        "--auth-file",
        metavar="FILE",
        help="user:password lines (mode 600); required for a non-loopback --listen",
    )
    web.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host header to serve (repeatable; default: loopback names on "
        "loopback, any name otherwise)",
    )
    web.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    web.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    data = parser.add_argument_group("data")
    data.add_argument("--db", required=True, metavar="FILE", help="weld history (SQLite)")
    data.add_argument(
        "--clips",
        metavar="DIR",
        help="the daemon's clips folder (<state_dir>/clips) for playback and review",
    )
    data.add_argument(
        "--dataset",
        metavar="DIR",
        help="training dataset root that reviewed clips are promoted into",
    )
    data.add_argument(
        "--retention-days",
        type=float,
        default=DEFAULT_RETENTION_DAYS,
        help="welds older than this are deleted (default %(default)s)",
    )
    data.add_argument(
        "--max-welds",
        type=int,
        default=DEFAULT_MAX_WELDS,
        help="welds kept at most (default %(default)s)",
    )
    alerts = parser.add_argument_group("alerts")
    alerts.add_argument(
        "--mute",
        action="append",
        metavar="PREFIX/STATION",
        help="no alert banner for this station (repeatable; its welds still say ALERT; more "
        "stations can be muted on the overview)",
    )
    alerts.add_argument(
        "--alert-cooldown",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after a station's alert banner, its alerts within this many seconds raise "
        "none (default %(default)s: every alert)",
    )
    data.add_argument(
        "--history",
        type=int,
        default=DEFAULT_HISTORY,
        help="verdicts per station card (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM: 0; 2 on bad arguments (nothing served)."""
    try:
        options = options_from_args(args)
        store = WeldStore(options.db, options.retention_days, options.max_welds)
    except (WeldmonError, PrefixError) as exc:
        print(f"{PREFIX} {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sock = _bind(options.listen)
    except ConsoleError as exc:
        store.close()
        print(f"{PREFIX} {exc}", file=sys.stderr)
        return EXIT_USAGE
    # uvicorn re-raises the signal that stopped it once it has shut down; with these
    # handlers in place that re-raise is a no-op instead of killing the process.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    asyncio.run(serve(options, sock, store))
    print(f"{PREFIX} stopped", file=sys.stderr)
    return EXIT_OK


COMMAND = Command(configure, run, "web console: live fleet, weld history, clip review")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monitor.console.cli ...``: the same as ``weldmon console ...``."""
    parser = argparse.ArgumentParser(prog="weldmon console", description=COMMAND.description)
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
