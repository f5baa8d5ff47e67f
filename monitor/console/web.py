"""The console's HTTP side: Starlette routes for the pages, the live stream, the clip audio
and spectrogram, the review action and the JSON API.

Starlette (not a larger framework): routing, form parsing, file responses with HTTP range
requests (what ``<audio>`` seeking needs) and middleware, with nothing we do not use;
sse-starlette for the event stream (keep-alive pings, client disconnects, shutdown).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from deploy.dataset_layout import GOOD_CODE, LABEL_CODES, ClipError
from monitor.console.api import QueryError, csv_lines, parse_filter, welds_json
from monitor.console.clipfiles import (
    ClipLookup,
    UnsafePathError,
    check_config_folder,
    default_config_folder,
    sidecar_window_probs,
)
from monitor.console.compare import compare_routes
from monitor.console.forms import FormError, check_form_headers, read_form
from monitor.console.pages import operations_routes
from monitor.console.records import Review, WeldFilter
from monitor.console.security import (
    BasicAuthMiddleware,
    SecurityHeadersMiddleware,
)
from monitor.console.state import ConsoleState, refresh_false_alarms
from monitor.console.store import MAX_PAGE, StoreError, WeldStore
from monitor.console.teach import teach_routes
from monitor.console.urls import weld_path, weld_url
from monitor.console.views import (
    STATIC,
    extra_fields,
    process_rows,
    verdict_quality,
    window_chart,
    window_length,
)
from monitor.events import WeldResult
from weldmon import __version__

HISTORY_PAGE = 100
DEFECT_CODES = {code: name for code, name in LABEL_CODES.items() if code != GOOD_CODE}
QUEUE_LIMIT = 200
SSE_PING_S = 15  # keeps proxies from closing an idle stream
MAX_NOTE_CHARS = 500
MAX_REVIEWER_CHARS = 64
MAX_EXPORT_ROWS = 1_000_000

log = structlog.get_logger(__name__)


def _page(state: ConsoleState, request: Request, template: str, **ctx: Any) -> HTMLResponse:
    html = state.env.get_template(template).render(
        fleet=state.fleet,
        csrf_token=state.csrf.token,
        user=request.scope.get("user_name"),
        version=__version__,
        active=template.removesuffix(".html"),
        thumbnails=state.folders.clips is not None,
        **ctx,
    )
    return HTMLResponse(html)


def _error(message: str, status: int) -> PlainTextResponse:
    return PlainTextResponse(f"weldmon console: {message}\n", status_code=status)


def create_app(state: ConsoleState, allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app; ``allowed_hosts`` are the Host headers served (``["*"]``: any)."""

    async def overview(request: Request) -> Response:
        return _page(state, request, "overview.html")

    async def events(request: Request) -> Response:
        queue = state.hub.subscribe()
        if queue is None:
            return _error("too many live pages open", 503)

        async def stream() -> AsyncIterator[dict[str, str]]:
            try:
                for current in state.fragments.snapshot():
                    yield {"event": "swap", "data": current.data()}
                while (fragment := await queue.get()) is not None:
                    yield {"event": "swap", "data": fragment.data()}
            finally:
                state.hub.unsubscribe(queue)

        return EventSourceResponse(stream(), ping=SSE_PING_S)

    async def history(request: Request) -> Response:
        query = dict(request.query_params)
        try:
            filters, _, offset = parse_filter(query)
        except QueryError as exc:
            return _error(str(exc), 400)
        rows = await state.db.call(WeldStore.welds, filters, HISTORY_PAGE, offset)
        total = await state.db.call(WeldStore.count, filters)
        stations = await state.db.call(WeldStore.stations)
        plain = {k: v for k, v in query.items() if k not in ("offset", "limit") and v}
        return _page(
            state,
            request,
            "history.html",
            rows=rows,
            clipped={row.result.weld_id for row in rows if _clip(row).path is not None},
            total=total,
            offset=offset,
            page=HISTORY_PAGE,
            query=plain,
            stations=stations,
        )

    async def _weld_or_404(weld_id: str):
        row = await state.db.call(WeldStore.weld, weld_id)
        return row

    def _clip(row) -> ClipLookup:
        r: WeldResult = row.result
        dataset_path = row.review.dataset_path if row.review else None
        return state.folders.find_clip(r.station, r.weld_id, r.clip_path, dataset_path)

    def _probs(row, clip: ClipLookup) -> list[float] | None:
        if row.result.window_probs:
            return list(row.result.window_probs)
        return sidecar_window_probs(clip.path) if clip.path is not None else None

    async def detail(request: Request, weld_id: str) -> Response:
        row = await _weld_or_404(weld_id)
        if row is None:
            return _error("no such weld in the history", 404)
        clip = _clip(row)
        return _page(
            state,
            request,
            "detail.html",
            row=row,
            r=row.result,
            clip=clip,
            chart=window_chart(row.result, row.window_s, _probs(row, clip)),
            extras=extra_fields(row.result),
            process=process_rows(row.result),
            quality=verdict_quality(row.result),
            defect_codes=DEFECT_CODES,
            config_folder=default_config_folder(
                row.prefix, row.result.station, row.result.started_at.astimezone()
            ),
            reviewable=row.review is None and (row.flagged or clip.path is not None),
            has_dataset=state.folders.dataset is not None,
        )

    async def _clip_of(weld_id: str) -> tuple[Any, ClipLookup, Path] | Response:
        """The weld's row, its clip and the clip's file, or the 404 that says which is
        missing."""
        row = await _weld_or_404(weld_id)
        if row is None:
            return _error("no such weld in the history", 404)
        clip = _clip(row)
        if clip.path is None:
            return _error(clip.refused or "this weld has no clip", 404)
        return row, clip, clip.path

    async def audio(request: Request, weld_id: str) -> Response:
        found = await _clip_of(weld_id)
        if isinstance(found, Response):
            return found
        _, _, path = found
        return FileResponse(path, media_type="audio/flac")

    async def spectrogram(request: Request, weld_id: str) -> Response:
        found = await _clip_of(weld_id)
        if isinstance(found, Response):
            return found
        row, clip, path = found
        # Imported here: matplotlib costs ~30 MB and ~0.5 s, paid when a clip is first viewed.
        from monitor.console.spectrogram import WindowScores, spectrogram_png

        r: WeldResult = row.result
        probs = _probs(row, clip)
        scores = None
        if probs:
            length = window_length(r, row.window_s, len(probs))
            scores = WindowScores(tuple(probs), length, r.threshold)
        try:
            png = await asyncio.to_thread(spectrogram_png, path, scores)
        except ClipError as exc:
            return _error(str(exc), 422)
        return Response(png, media_type="image/png", headers={"cache-control": "max-age=3600"})

    async def thumbnail(request: Request, weld_id: str) -> Response:
        found = await _clip_of(weld_id)
        if isinstance(found, Response):
            return found
        _, _, path = found
        from monitor.console.thumbnail import thumbnail_png  # no matplotlib: cheap, see there

        try:
            png = await asyncio.to_thread(thumbnail_png, path)
        except ClipError as exc:
            return _error(str(exc), 422)
        return Response(png, media_type="image/png", headers={"cache-control": "max-age=3600"})

    async def review(request: Request, weld_id: str) -> Response:
        # Everything the headers can tell is checked before the body is read, and the body
        # is read only up to a bound (monitor.console.forms).
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = state.csrf.header_problem(headers, request.url.scheme)
        if problem is not None:
            log.warning("console_review_refused", weld_id=weld_id, why=problem)
            return _error(problem, 403)
        try:
            check_form_headers(headers)
            fields = await read_form(request)
        except FormError as exc:
            log.warning("console_review_refused", weld_id=weld_id, why=str(exc))
            return _error(str(exc), exc.status)
        problem = state.csrf.token_problem(fields.get("csrf_token"))
        if problem is not None:
            log.warning("console_review_refused", weld_id=weld_id, why=problem)
            return _error(problem, 403)
        async with state.review_lock:
            return await _review(request, weld_id, fields)

    async def _review(request: Request, weld_id: str, form: dict[str, str]) -> Response:
        row = await _weld_or_404(weld_id)
        if row is None:
            return _error("no such weld in the history", 404)
        if row.review is not None:
            return _error(f"already reviewed by {row.review.reviewer}", 409)
        verdict = form.get("verdict", "")
        if verdict == "defect":
            code = form.get("label_code", "")
            if not code:
                return _error("choose the defect type before 'Confirmed defect'", 400)
            if code not in DEFECT_CODES:
                return _error(f"unknown defect type {code!r}", 400)
        elif verdict == "good":
            code = GOOD_CODE
        else:
            return _error("verdict must be 'defect' or 'good'", 400)
        reviewer = request.scope.get("user_name") or form.get("reviewer", "").strip()
        if not reviewer or len(reviewer) > MAX_REVIEWER_CHARS:
            return _error(f"give your name (1..{MAX_REVIEWER_CHARS} characters)", 400)
        note = form.get("note", "").strip()[:MAX_NOTE_CHARS] or None
        clip = _clip(row)
        if not (row.flagged or clip.path is not None):
            return _error("only flagged or clipped welds are reviewed", 400)
        r = row.result
        dataset_path = None
        if clip.path is not None and clip.origin != "dataset" and state.folders.dataset:
            folder = form.get("config_folder", "").strip() or default_config_folder(
                row.prefix, r.station, r.started_at.astimezone()
            )
            try:
                check_config_folder(folder)
            except UnsafePathError as exc:  # the browser's input: a bad request, not a conflict
                return _error(str(exc), 400)
            try:
                dataset_path = await asyncio.to_thread(
                    state.folders.promote, clip.path, folder, code
                )
            except ClipError as exc:
                return _error(f"the clip could not be promoted: {exc}", 409)
        entry = Review(
            weld_id=r.weld_id,
            prefix=row.prefix,
            station=r.station,
            verdict=verdict,
            label_code=code,
            label_name=LABEL_CODES[code],
            model_label=r.label,
            alerted=row.alerted,
            reviewer=reviewer,
            reviewed_at=datetime.now(UTC),
            dataset_path=dataset_path,
            note=note,
        )
        try:
            await state.db.call(WeldStore.add_review, entry)
        except StoreError as exc:
            log.error("console_review_not_recorded", weld_id=weld_id, moved_to=dataset_path)
            return _error(f"{exc} (clip now at {dataset_path})", 409)
        log.info("console_review", weld_id=weld_id, verdict=verdict, code=code, to=dataset_path)
        await refresh_false_alarms(state)
        return RedirectResponse(weld_url(weld_id), status_code=303)

    async def review_page(request: Request) -> Response:
        queue = await state.db.call(
            WeldStore.welds, WeldFilter(reviewed=False, flagged=True), QUEUE_LIMIT, 0
        )
        recent = await state.db.call(WeldStore.welds, WeldFilter(reviewed=True), 20, 0)
        counts = await state.db.call(WeldStore.station_counts)
        return _page(state, request, "review.html", queue=queue, recent=recent, counts=counts)

    async def api_welds(request: Request) -> Response:
        try:
            filters, limit, offset = parse_filter(dict(request.query_params))
        except QueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        rows = await state.db.call(WeldStore.welds, filters, limit, offset)
        total = await state.db.call(WeldStore.count, filters)
        return Response(welds_json(rows, total, limit, offset), media_type="application/json")

    async def api_welds_csv(request: Request) -> Response:
        try:
            filters, _, _ = parse_filter(dict(request.query_params))
        except QueryError as exc:
            return _error(str(exc), 400)
        # Pages are read up front (one thread owns the database); a million rows is ~200 MB.
        pages = []
        for offset in range(0, MAX_EXPORT_ROWS, MAX_PAGE):
            rows = await state.db.call(WeldStore.welds, filters, MAX_PAGE, offset)
            pages.append(rows)
            if len(rows) < MAX_PAGE:
                break

        def lines() -> Iterator[str]:
            yield from csv_lines(iter(pages))

        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return StreamingResponse(
            lines(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="welds-{stamp}.csv"'},
        )

    async def api_weld(request: Request, weld_id: str) -> Response:
        row = await _weld_or_404(weld_id)
        if row is None:
            return JSONResponse({"error": "no such weld"}, status_code=404)
        clip = _clip(row)
        data = row.as_json()
        data["console"]["clip"] = {
            "available": clip.path is not None,
            "origin": clip.origin,
            "refused": clip.refused,
        }
        return JSONResponse(data)

    async def api_stats(request: Request) -> Response:
        ingest = state.ingest.counters if state.ingest else None
        return JSONResponse(
            {
                "version": __version__,
                "started_at": state.started_at.isoformat(),
                "connection": state.fleet.connection.state,
                "messages": state.fleet.messages,
                "malformed": state.fleet.malformed,
                "last_malformed": state.fleet.last_malformed,
                "results": ingest.results if ingest else 0,
                "duplicates": ingest.duplicates if ingest else 0,
                "store_errors": ingest.store_errors if ingest else 0,
                "by_kind": ingest.by_kind if ingest else {},
                "clips": state.folders.counters,
                "live_pages": state.hub.clients,
                "live_pages_dropped": state.hub.dropped_clients,
                "render_errors": state.hub.render_errors,
                "prefixes": {
                    g.prefix: {"state": g.state, "stations": sorted(g.stations)}
                    for g in state.fleet.sorted_groups()
                },
            }
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)  # browsers ask on every page; a 404 would log noise

    # A weld's pages: the id is read from the raw path (monitor.console.urls), so any id,
    # '/' and '?' included, reaches its own pages.
    weld_pages = {
        "": detail,
        "audio": audio,
        "spectrogram.png": spectrogram,
        "thumbnail.png": thumbnail,
        "review": review,
    }

    async def weld(request: Request) -> Response:
        found = weld_path(request.scope, "/welds/")
        handler = weld_pages.get(found[1]) if found else None
        if found is None or handler is None:
            return _error("no such page", 404)
        if (handler is review) != (request.method == "POST"):
            return _error(f"{request.method} not allowed here", 405)
        return await handler(request, found[0])

    async def api_weld_route(request: Request) -> Response:
        found = weld_path(request.scope, "/api/welds/")
        if found is None or found[1]:
            return JSONResponse({"error": "no such page"}, status_code=404)
        return await api_weld(request, found[0])

    routes = [
        Route("/", overview),
        Route("/events", events),
        Route("/welds", history),
        Route("/welds/{rest:path}", weld, methods=["GET", "POST"]),
        Route("/review", review_page),
        Route("/api/welds", api_welds),
        Route("/api/welds.csv", api_welds_csv),
        Route("/api/welds/{rest:path}", api_weld_route),
        Route("/api/stats", api_stats),
        *operations_routes(state, _page, _error),
        Route("/healthz", healthz),
        Route("/favicon.ico", no_icon),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        *compare_routes(state, _page, _error),
        *teach_routes(state, _page, _error),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or ["*"]),
        Middleware(SecurityHeadersMiddleware),
        Middleware(BasicAuthMiddleware, users=state.users),
    ]
    return Starlette(routes=routes, middleware=middleware)
