"""The JSON API and the CSV export: query parsing, and the rows as published.

``GET /api/welds`` returns ``{"count": N, "limit": L, "offset": O, "welds": [...]}``, newest
first; each weld is its ``weld_result`` event exactly as published, plus a ``console``
object (daemon prefix, arrival time, whether it alerted, the review). Filters:
``prefix``, ``station``, ``label`` (``0``/``1``/``good_weld``/``defect``), ``part_id``,
``since``/``until`` (a date in the console's local zone, ``until`` inclusive, or an ISO 8601
time with zone), ``reviewed`` and ``flagged`` (``true``/``false``), ``limit`` (default 500,
at most 5000) and ``offset``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta

from deploy.errors import WeldmonError
from monitor.console.records import WeldFilter, WeldRow
from monitor.console.store import MAX_PAGE

DEFAULT_LIMIT = 500
# SQLite's OFFSET is a signed 64-bit integer; a larger one would not reach the database as a
# number at all. No history comes near it (--max-welds keeps it to a few hundred thousand).
MAX_OFFSET = 2**63 - 1
# Where a filter time falls outside what datetime can hold once moved to UTC
# (9999-12-31 as an inclusive "until", 0001-01-01 in a zone east of UTC), it means "no bound
# on this side": the earliest or latest time there is.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
CSV_COLUMNS = (
    "prefix",
    "station",
    "weld_id",
    "started_at",
    "ended_at",
    "duration_s",
    "label_name",
    "p_defect",
    "threshold",
    "n_windows",
    "alerted",
    "degraded_reasons",
    "end_reason",
    "part_id",
    "review_verdict",
    "review_label",
    "reviewer",
    "reviewed_at",
    "model_sha256",
)
# A cell a spreadsheet would run as a formula (CSV injection): part ids and reviewer names
# come from outside, so such cells get a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class QueryError(WeldmonError):
    """A filter in the query string is not understood (HTTP 400)."""


def _bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise QueryError(f"{name}: expected true or false, got {text!r}")


def _time(name: str, text: str, end_of_day: bool) -> datetime:
    """The filter time in UTC; clamped to EARLIEST/LATEST where it falls off the calendar."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end_of_day:
                if day == date.max:
                    return LATEST
                day += timedelta(days=1)
            value = datetime.combine(day, time())
        else:
            value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise QueryError(f"{name}: expected YYYY-MM-DD or an ISO 8601 time, got {text!r}") from exc
    try:
        return (value if value.tzinfo else value.astimezone()).astimezone(UTC)
    except (OverflowError, OSError, ValueError):  # year 0 or 10000; OSError: mktime
        return EARLIEST if value.year < date.max.year // 2 else LATEST


def parse_filter(query: Mapping[str, str]) -> tuple[WeldFilter, int, int]:
    """The filter, limit and offset of a query string; raises QueryError."""
    label: int | None = None
    if text := query.get("label", ""):
        codes = {"0": 0, "1": 1, "good_weld": 0, "good": 0, "defect": 1}
        if text not in codes:
            raise QueryError(f"label: expected 0, 1, good_weld or defect, got {text!r}")
        label = codes[text]
    station = query.get("station") or None
    prefix = query.get("prefix") or None
    if station and "|" in station and prefix is None:
        prefix, station = station.split("|", 1)  # the history form's "prefix|station"
    try:
        limit = int(query.get("limit") or DEFAULT_LIMIT)
        offset = int(query.get("offset") or 0)
    except ValueError as exc:
        raise QueryError("limit and offset must be whole numbers") from exc
    if not 1 <= limit <= MAX_PAGE or not 0 <= offset <= MAX_OFFSET:
        raise QueryError(f"limit must be 1..{MAX_PAGE} and offset 0..{MAX_OFFSET}")
    filters = WeldFilter(
        prefix=prefix,
        station=station,
        label=label,
        part_id=query.get("part_id") or None,
        since=_time("since", query["since"], False) if query.get("since") else None,
        until=_time("until", query["until"], True) if query.get("until") else None,
        reviewed=_bool("reviewed", query["reviewed"]) if query.get("reviewed") else None,
        flagged=_bool("flagged", query["flagged"]) if query.get("flagged") else None,
    )
    return filters, limit, offset


def welds_json(rows: list[WeldRow], count: int, limit: int, offset: int) -> bytes:
    return json.dumps(
        {"count": count, "limit": limit, "offset": offset, "welds": [r.as_json() for r in rows]}
    ).encode()


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_lines(pages: Iterator[list[WeldRow]]) -> Iterator[str]:
    """The CSV export, header first, one line per weld, page by page."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue()
    for rows in pages:
        out.seek(0)
        out.truncate()
        for row in rows:
            r, review = row.result, row.review
            writer.writerow(
                _cell(v)
                for v in (
                    row.prefix,
                    r.station,
                    r.weld_id,
                    r.started_at.isoformat().replace("+00:00", "Z"),
                    r.ended_at.isoformat().replace("+00:00", "Z"),
                    f"{r.duration_s:.3f}",
                    r.label_name,
                    f"{r.p_defect:.6f}",
                    f"{r.threshold:.6f}",
                    r.n_windows,
                    int(row.alerted),
                    ";".join(r.degraded_reasons),
                    r.end_reason,
                    row.part_id or "",
                    review.verdict if review else "",
                    review.label_name if review else "",
                    review.reviewer if review else "",
                    review.reviewed_at.isoformat().replace("+00:00", "Z") if review else "",
                    r.model_sha256,
                )
            )
        yield out.getvalue()
