"""``/teach``: the stations' teach-in from the console (issue 19), beside `weldmon teach`.

The page lists every station of every daemon the console follows with the daemon's latest
answer on ``{prefix}/teach/reply`` (state, welds collected, threshold and its source, the
warning or the reason of a refusal) and, while a teach-in runs, its welds, each with a
"drop" button (a known-bad part). ``POST /teach/{start,status,drop,accept,reset}``
publishes ``{prefix}/cmd/teach`` (QoS 1) with the signed-in user as ``by``, exactly as the
CLI does; like the compare page's promote it needs a signed-in user (the console started
with ``--auth-file``) and the page's CSRF token. The daemon does the command and answers
on ``{prefix}/teach/reply``; the page shows that answer once it arrived (reload it).
"""

from __future__ import annotations

import uuid

import aiomqtt
import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from monitor.console.compare import ErrorPage, PageRenderer, publish_command
from monitor.console.state import ConsoleState
from monitor.events.teach import TEACH_ACTIONS, TeachCommand, TeachReply, teach_command_topic

log = structlog.get_logger(__name__)


def run_welds(reply: TeachReply | None, seen: list[str]) -> list[tuple[str, bool]]:
    """The running teach-in's welds for the page: (weld_id, in the daemon's last answer).
    The answer's welds first; then the welds whose results carried the run's id since
    (`seen`), unless the daemon dropped them: they join its set with its next answer."""
    if reply is None or reply.run_id is None:
        return []
    known = set(reply.weld_ids) | set(reply.dropped)
    return [(w, True) for w in reply.weld_ids] + [(w, False) for w in seen if w not in known]


def teach_routes(state: ConsoleState, page: PageRenderer, error: ErrorPage) -> list[Route]:
    """The page and its actions, drawn with the console's own `page` and `error`."""

    async def teach(request: Request) -> Response:
        ingest = state.ingest
        replies: dict[tuple[str, str], TeachReply] = ingest.teach if ingest is not None else {}
        welds = {
            key: run_welds(
                reply, ingest.teach_welds.get((*key, reply.run_id or ""), []) if ingest else []
            )
            for key, reply in replies.items()
        }
        return page(
            state,
            request,
            "teach.html",
            replies=replies,
            welds=welds,
            can_teach=state.users is not None and state.ingest is not None,
            sent=request.query_params.get("sent"),
        )

    async def command(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in TEACH_ACTIONS:
            return error(f"no teach-in action {action!r}; one of {list(TEACH_ACTIONS)}", 404)
        form = await request.form()
        token = form.get("csrf_token")
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = state.csrf.problem(
            headers, request.url.scheme, token if isinstance(token, str) else None
        )
        if problem is not None:
            log.warning("console_teach_command_refused", action=action, why=problem)
            return error(problem, 403)
        user = request.scope.get("user_name")
        if state.users is None or not user:
            return error(
                f"teach {action} needs a signed-in user: start the console with --auth-file", 403
            )
        prefix, station, weld_id = form.get("prefix"), form.get("station"), form.get("weld_id")
        group = state.fleet.groups.get(prefix) if isinstance(prefix, str) else None
        if group is None or not isinstance(prefix, str):
            return error(f"no daemon {prefix!r} is known to this console", 400)
        if not isinstance(station, str) or station not in group.stations:
            return error(f"{prefix} has no station {station!r} known to this console", 400)
        if action == "drop" and not (isinstance(weld_id, str) and weld_id):
            return error("drop needs the weld_id of the weld to leave out", 400)
        if state.ingest is None:
            return error("the console has no broker connection", 503)
        sent = TeachCommand(
            action=action,
            station=station,
            weld_id=weld_id if action == "drop" else None,
            request_id=uuid.uuid4().hex,
            by=user,
        )
        try:
            await publish_command(
                state.ingest.options,
                teach_command_topic(prefix),
                sent.model_dump_json().encode(),
            )
        except aiomqtt.MqttError as exc:
            return error(f"the teach {action} request could not be sent: {exc}", 503)
        log.info(
            "console_teach_command_sent", action=action, prefix=prefix, station=station, by=user
        )
        return RedirectResponse(f"/teach?sent={sent.request_id}", status_code=303)

    return [
        Route("/teach", teach),
        Route("/teach/{action}", command, methods=["POST"]),
    ]
