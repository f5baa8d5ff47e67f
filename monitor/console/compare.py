"""``/compare``: the shadow model against production, and the promote button.

The page reads `monitor.console.shadow_store.comparison`: per station and overall, how often
the two models agree, each model's false alarms and misses against the reviews filed here,
and the welds where they differ (each links to its page, with spectrogram and audio).

``POST /compare/promote`` asks one daemon to promote its shadow model (``/compare/rollback``:
to bring back the model before its last promote): it needs a signed-in
user (the console started with ``--auth-file``; an open console may look, not promote) and
the page's CSRF token, and it names the candidate it saw (``expect_sha256``), so the daemon
refuses if another one is in shadow by then. The console publishes ``{prefix}/cmd/promote``
(QoS 1) with the user as ``by`` and this page's figures for that daemon; the daemon answers
on ``{prefix}/model/change`` and keeps the audit line (docs/operations.md).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import aiomqtt
import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from monitor.console.shadow_store import comparison
from monitor.console.state import ConsoleState
from monitor.events import SHA256_PATTERN
from monitor.events.shadow import ModelAction, ModelCommand, model_command_topic
from monitor.live.feed import CONNECT_TIMEOUT_S, BrokerOptions

COMMAND_QOS = 1

log = structlog.get_logger(__name__)

PageRenderer = Callable[..., HTMLResponse]  # (state, request, template, **context)
ErrorPage = Callable[[str, int], PlainTextResponse]


async def publish_command(options: BrokerOptions, topic: str, payload: bytes) -> None:
    """One QoS 1 publish on a connection of its own (a clean session, a random id);
    aiomqtt.MqttError when the broker cannot be reached."""
    async with aiomqtt.Client(
        options.host,
        options.port,
        username=options.username,
        password=options.password,
        timeout=CONNECT_TIMEOUT_S,
        tls_context=options.tls_context,
    ) as client:
        await client.publish(topic, payload, qos=COMMAND_QOS)


def compare_routes(state: ConsoleState, page: PageRenderer, error: ErrorPage) -> list[Route]:
    """The page and the promote action, drawn with the console's own `page` and `error`."""

    async def compare(request: Request) -> Response:
        found = await state.db.call(comparison)
        return page(
            state,
            request,
            "compare.html",
            cmp=found,
            can_promote=state.users is not None and state.ingest is not None,
            sent=request.query_params.get("sent"),
        )

    async def promote(request: Request) -> Response:
        return await _command(request, "promote")

    async def rollback(request: Request) -> Response:
        return await _command(request, "rollback")

    async def _command(request: Request, action: ModelAction) -> Response:
        form = await request.form()
        token = form.get("csrf_token")
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = state.csrf.problem(
            headers, request.url.scheme, token if isinstance(token, str) else None
        )
        if problem is not None:
            log.warning("console_model_command_refused", action=action, why=problem)
            return error(problem, 403)
        user = request.scope.get("user_name")
        if state.users is None or not user:
            why = f"{action} needs a signed-in user: start the console with --auth-file"
            return error(why, 403)
        prefix, sha = form.get("prefix"), form.get("expect_sha256")
        if not isinstance(prefix, str) or prefix not in state.fleet.groups:
            return error(f"no daemon {prefix!r} is known to this console", 400)
        found = await state.db.call(comparison)
        if action == "promote" and (
            not isinstance(sha, str)
            or found.candidate.get(prefix) != sha
            or not re.fullmatch(SHA256_PATTERN, sha)
        ):
            return error(f"{prefix!r} has no shadow model {sha!r} on this page (reload it)", 409)
        if state.ingest is None:
            return error("the console has no broker connection", 503)
        command = ModelCommand(
            request_id=uuid.uuid4().hex,
            by=user,
            expect_sha256=sha if action == "promote" else None,
            figures=found.figures(prefix),
        )
        try:
            await publish_command(
                state.ingest.options,
                model_command_topic(prefix, action),
                command.model_dump_json().encode(),
            )
        except aiomqtt.MqttError as exc:
            return error(f"the {action} request could not be sent: {exc}", 503)
        log.info("console_model_command_sent", action=action, prefix=prefix, by=user)
        return RedirectResponse(f"/compare?sent={command.request_id}", status_code=303)

    return [
        Route("/compare", compare),
        Route("/compare/promote", promote, methods=["POST"]),
        Route("/compare/rollback", rollback, methods=["POST"]),
    ]
