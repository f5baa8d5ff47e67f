"""`weldmon model info|promote|rollback`: an artifact's own facts (deploy's `info`), and
asking a running daemon to promote its shadow model or roll back (`monitor/promote.py`).

``--daemon CONFIG`` is the daemon's own config file: the command reaches the daemon through
the broker and prefix it names (its credentials and TLS too), publishes the command on
``{prefix}/cmd/promote|rollback`` with a fresh ``request_id`` and waits for the daemon's
``model_change`` answer with that id. Exit 0 when applied, 1 when refused or when no answer
came within ``--timeout-s``, 2 for a bad config or argument.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import uuid
from typing import TYPE_CHECKING

from weldmon.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, fail

DEFAULT_TIMEOUT_S = 60.0  # a promote loads and self-tests a model: seconds on a small box

if TYPE_CHECKING:  # imported lazily at run time: `weldmon model info` stays light
    from monitor.events.shadow import ModelAction, ModelChange, ModelCommand
    from monitor.publish.settings import MqttConfig


def configure(parser: argparse.ArgumentParser) -> None:
    """The `info`, `promote` and `rollback` actions."""
    from deploy.cli import add_model_info
    from monitor.publish.request import add_daemon_options

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_model_info(actions)
    for action, what in (
        ("promote", "make the daemon's shadow model its production model, between welds"),
        ("rollback", "bring back the production model before the last promote"),
    ):
        sub = actions.add_parser(action, help=what, description=what)
        add_daemon_options(sub, by_help="the audit line", default_timeout_s=DEFAULT_TIMEOUT_S)
        if action == "promote":
            sub.add_argument(
                "--expect-sha256",
                default=None,
                help="refuse unless the shadow model in service has this sha256",
            )


def run(args: argparse.Namespace) -> int:
    """Run one action; the exit code."""
    if args.action == "info":
        from deploy.cli import run_model_info

        return run_model_info(args)
    from pydantic import ValidationError

    from deploy.errors import WeldmonError
    from monitor.config import load_config
    from monitor.events.shadow import ModelCommand

    if not args.timeout_s > 0:
        return fail("--timeout-s must be > 0", EXIT_USAGE)
    try:
        cfg = load_config(args.daemon, check_files=False, create_state=False)
        command = ModelCommand(
            request_id=uuid.uuid4().hex,
            by=args.by or getpass.getuser(),
            expect_sha256=getattr(args, "expect_sha256", None),
        )
    except (WeldmonError, ValidationError) as exc:
        return fail(str(exc), EXIT_USAGE)
    try:
        answer = asyncio.run(_ask(cfg.mqtt, args.action, command, args.timeout_s))
    except WeldmonError as exc:
        return fail(str(exc), EXIT_FAILURE)
    if answer is None:
        return fail(f"no answer from the daemon within {args.timeout_s:g} s", EXIT_FAILURE)
    print(json.dumps(answer.model_dump(mode="json"), indent=2))
    if answer.outcome != "applied":
        return fail(f"{args.action} refused: {answer.reason}", EXIT_FAILURE)
    return EXIT_OK


async def _ask(
    mqtt: MqttConfig, action: ModelAction, command: ModelCommand, timeout_s: float
) -> ModelChange | None:
    """Publish `command` and return the daemon's `ModelChange` with its request_id (None on
    timeout); WeldmonError says why the broker cannot be used."""
    from monitor.events.shadow import model_change_topic, model_command_topic, parse_model_change
    from monitor.publish.request import ask_daemon

    prefix = mqtt.topic_prefix
    assert command.request_id is not None  # the caller gives each command a fresh one
    return await ask_daemon(
        mqtt,
        command_topic=model_command_topic(prefix, action),
        payload=command.model_dump_json(),
        reply_topic=model_change_topic(prefix),
        parse=parse_model_change,
        request_id=command.request_id,
        timeout_s=timeout_s,
        tag="model",
    )
