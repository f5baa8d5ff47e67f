"""The console's operations pages, beside the weld pages of `monitor.console.web`: per-station
mute (``POST /stations/mute``), trends (``/trends``), the system page (``/system``) and the
glossary (``/glossary``). Routes are built per console state, like `web.create_app`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from monitor.console.fleet import COMMAND_LINE_MUTE
from monitor.console.state import ConsoleState
from monitor.console.store import StoreError, WeldStore
from monitor.console.system import daemon_health, duration_text
from monitor.console.trends import DEFAULT_DAYS, MAX_DAYS, PERIODS, trend_chart, trends

# The terms the pages use, in plain words (MIL, top-k, p_defect, margin...): the source
# tree's docs/glossary.md (the console runs from an editable install or a checkout).
GLOSSARY = Path(__file__).resolve().parents[2] / "docs" / "glossary.md"

log = structlog.get_logger(__name__)
PageRenderer = Callable[..., Response]  # web._page(state, request, template, **context)
ErrorResponse = Callable[[str, int], Response]  # web._error(message, status)


def operations_routes(
    state: ConsoleState, _page: PageRenderer, _error: ErrorResponse
) -> list[Route]:
    """The routes, rendering with the console's page and error helpers."""

    async def mute(request: Request) -> Response:
        form = await request.form()
        token = form.get("csrf_token")
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = state.csrf.problem(
            headers, request.url.scheme, token if isinstance(token, str) else None
        )
        if problem is not None:
            return _error(problem, 403)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        prefix, name, action = (fields.get(k, "") for k in ("prefix", "station", "action"))
        group = state.fleet.groups.get(prefix)
        station = group.stations.get(name) if group is not None else None
        if station is None:
            return _error("no such station on the overview", 404)
        if action not in ("mute", "unmute"):
            return _error("action must be 'mute' or 'unmute'", 400)
        if station.muted_by == COMMAND_LINE_MUTE:
            return _error("muted by the console's --mute: restart without it to unmute", 409)
        who = request.scope.get("user_name") or "console" if action == "mute" else None
        try:
            await state.db.call(WeldStore.set_mute, prefix, name, who, datetime.now(UTC))
        except StoreError as exc:
            return _error(f"the mute could not be kept: {exc}", 409)
        log.info("console_mute", prefix=prefix, station=name, muted_by=who)
        state.changed(state.fleet.set_muted(prefix, name, who))
        return RedirectResponse("/", status_code=303)

    async def system_page(request: Request) -> Response:
        now = datetime.now(UTC)
        daemons = [daemon_health(g, now) for g in state.fleet.sorted_groups()]
        ingest = state.ingest.counters if state.ingest else None
        console = {
            "started": state.started_at,
            "uptime": duration_text((now - state.started_at).total_seconds()),
            "messages": state.fleet.messages,
            "bad messages": state.fleet.malformed,
            "results stored": ingest.results if ingest else 0,
            "duplicates ignored": ingest.duplicates if ingest else 0,
            "history write errors": ingest.store_errors if ingest else 0,
            "clip paths refused": state.folders.counters["clip_path_refused"],
            "open live pages": state.hub.clients,
        }
        return _page(
            state, request, "system.html", daemons=daemons, console=console, duration=duration_text
        )

    async def trends_page(request: Request) -> Response:
        period = request.query_params.get("by", "day")
        days_text = request.query_params.get("days", str(DEFAULT_DAYS))
        if period not in PERIODS:
            return _error(f"by must be one of {', '.join(PERIODS)}, got {period!r}", 400)
        if not days_text.isdigit() or not 1 <= int(days_text) <= MAX_DAYS:
            return _error(f"days must be a whole number from 1 to {MAX_DAYS}", 400)
        days = int(days_text)
        since = datetime.now(UTC) - timedelta(days=days)
        rows = await state.db.call(WeldStore.trend_rows, since)
        stations = trends(rows, period)  # checked against PERIODS
        charts = {t.key: trend_chart(t.buckets) for t in stations}
        return _page(
            state,
            request,
            "trends.html",
            stations=stations,
            charts=charts,
            period=period,
            days=days,
            periods=PERIODS,
        )

    async def glossary(request: Request) -> Response:
        try:
            text = GLOSSARY.read_text()
        except OSError:
            return _error("the glossary is docs/glossary.md in weldmon's source", 404)
        return PlainTextResponse(text, media_type="text/plain; charset=utf-8")

    return [
        Route("/stations/mute", mute, methods=["POST"]),
        Route("/trends", trends_page),
        Route("/system", system_page),
        Route("/glossary", glossary),
    ]
