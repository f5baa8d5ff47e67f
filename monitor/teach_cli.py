"""`weldmon teach start|status|drop|accept|reset --daemon CONFIG --station S [--weld ID]`:
a station's teach-in on a running daemon (monitor/teach; docs/operations.md,
"Commissioning a cell").

``--daemon CONFIG`` is the daemon's own config file: the command reaches the daemon through
the broker and prefix it names (its credentials and TLS too), publishes on
``{prefix}/cmd/teach`` with a fresh ``request_id`` and waits for the daemon's ``teach_in``
answer with that id on ``{prefix}/teach/reply``. Exit 0 when applied (a warning, such as a
rough calibration below 5 welds, is printed on stderr), 1 when refused or no answer came
within ``--timeout-s``, 2 for a bad config or argument (a station the config does not have).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import uuid
from typing import TYPE_CHECKING

from weldmon.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, fail

DEFAULT_TIMEOUT_S = 10.0  # the daemon answers at once: no model is loaded for a teach command

if TYPE_CHECKING:
    from monitor.events.teach import TeachCommand, TeachReply
    from monitor.publish.settings import MqttConfig

ACTIONS = {
    "start": "start collecting the station's good welds (those that start from now on)",
    "status": "show the station's teach-in: state, welds collected, threshold in force",
    "drop": "leave one weld (a known-bad part) out of the running teach-in",
    "accept": "compute and keep the station's threshold from the welds collected (1 or more)",
    "reset": "end a running teach-in; with none running, forget the station's calibration",
}


def configure(parser: argparse.ArgumentParser) -> None:
    """One sub-command per action."""
    from monitor.publish.request import add_daemon_options

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, what in ACTIONS.items():
        sub = actions.add_parser(action, help=what, description=what)
        add_daemon_options(sub, by_help="the reply says it", default_timeout_s=DEFAULT_TIMEOUT_S)
        sub.add_argument("--station", required=True, help="the station to teach")
        if action == "drop":
            sub.add_argument("--weld", required=True, metavar="WELD_ID", help="the weld to drop")


def run(args: argparse.Namespace) -> int:
    """Run one action; the exit code."""
    from pydantic import ValidationError

    from deploy.errors import WeldmonError
    from monitor.config import load_config
    from monitor.events.teach import TeachCommand

    if not args.timeout_s > 0:
        return fail("--timeout-s must be > 0", EXIT_USAGE)
    try:
        cfg = load_config(args.daemon, check_files=False, create_state=False)
        command = TeachCommand(
            action=args.action,
            station=args.station,
            weld_id=getattr(args, "weld", None),
            request_id=uuid.uuid4().hex,
            by=args.by or getpass.getuser(),
        )
    except ValidationError as exc:
        return fail(f"bad argument: {exc.errors()[0]['msg']}", EXIT_USAGE)
    except WeldmonError as exc:
        return fail(str(exc), EXIT_USAGE)
    stations = cfg.audio.station_names()
    if args.station not in stations:
        return fail(
            f"--station {args.station!r}: {args.daemon} has the stations {stations}", EXIT_USAGE
        )
    try:
        answer = asyncio.run(_ask(cfg.mqtt, command, args.timeout_s))
    except WeldmonError as exc:
        return fail(str(exc), EXIT_FAILURE)
    if answer is None:
        return fail(f"no answer from the daemon within {args.timeout_s:g} s", EXIT_FAILURE)
    print(json.dumps(answer.model_dump(mode="json"), indent=2))
    if answer.outcome != "applied":
        return fail(f"teach {args.action} refused: {answer.reason}", EXIT_FAILURE)
    if answer.warning:
        print(f"warning: {answer.warning}", file=sys.stderr)
    return EXIT_OK


async def _ask(mqtt: MqttConfig, command: TeachCommand, timeout_s: float) -> TeachReply | None:
    """Publish `command` and return the daemon's reply with its request_id (None on
    timeout); WeldmonError says why the broker cannot be used."""
    from monitor.events.teach import parse_teach_reply, teach_command_topic, teach_reply_topic
    from monitor.publish.request import ask_daemon

    prefix = mqtt.topic_prefix
    assert command.request_id is not None  # the caller gives each command a fresh one
    return await ask_daemon(
        mqtt,
        command_topic=teach_command_topic(prefix),
        payload=command.model_dump_json(),
        reply_topic=teach_reply_topic(prefix),
        parse=parse_teach_reply,
        request_id=command.request_id,
        timeout_s=timeout_s,
        tag="teach",
    )
