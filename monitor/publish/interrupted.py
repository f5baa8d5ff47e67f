"""Results for welds a killed daemon left open: a start was published, a result never was.

A SIGKILL, a watchdog abort (SIGABRT) or a power cut stops the daemon without closing its open
welds, so their start (and progress) went out and nothing followed. The outbox keeps every
weld that has a start and no result, with its verdict so far (`Outbox.open_welds`); the next
daemon turns each into a result before it captures anything:

- same `weld_id`, station, source, model and start time as the start;
- `degraded_reasons: ["interrupted"]`, `end_reason: shutdown`;
- the verdict from the windows judged before the crash (their rolling `p_defect`,
  `n_windows`, `window_p_max`; `label` is `p_defect >= threshold`), else not judged
  (`judged: false`, `n_windows: 0`, `p_defect: 0`);
- `ended_at` is the end of the last judged window (the last audio known to have been heard);
  with none, the start time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

import structlog
from pydantic import ValidationError

from deploy.contract import LABEL_NAMES
from monitor.events import (
    DegradedReason,
    EndReason,
    MalformedMessageError,
    WeldResult,
    WeldStart,
    parse_event,
)
from monitor.publish.outbox import OpenWeldRecord, OutboxError

log = structlog.get_logger(__name__)


def interrupted_result(record: OpenWeldRecord) -> WeldResult:
    """The result of one weld left open; raises MalformedMessageError if its stored start is
    not a weld_start."""
    start = parse_event(record.start)
    if not isinstance(start, WeldStart):
        raise MalformedMessageError(f"open weld {record.weld_id}: stored start is a {start.kind}")
    judged = record.n_windows > 0 and record.p_defect is not None
    p = float(record.p_defect) if judged and record.p_defect is not None else 0.0
    label = int(judged and p >= start.threshold)
    elapsed = max(0.0, record.elapsed_s or 0.0) if judged else 0.0
    return WeldResult(
        daemon_version=start.daemon_version,
        model_sha256=start.model_sha256,
        model_name=start.model_name,
        model_version=start.model_version,
        station=start.station,
        weld_id=start.weld_id,
        source=start.source,
        started_at=start.started_at,
        ended_at=start.started_at + timedelta(seconds=elapsed),
        duration_s=elapsed,
        label=label,
        label_name=LABEL_NAMES[label],
        p_defect=p,
        threshold=start.threshold,
        threshold_source=start.threshold_source,
        n_windows=record.n_windows if judged else 0,
        window_p_max=float(record.window_p_max or 0.0) if judged else 0.0,
        degraded=True,
        degraded_reasons=[DegradedReason.INTERRUPTED],
        dropped_frames=0,
        end_reason=EndReason.SHUTDOWN,
        context=start.context,
        judged=judged,
    )


class OpenWelds(Protocol):
    """Where the open welds are kept: the outbox, or the publisher's spool in front of it."""

    def open_welds(self) -> list[OpenWeldRecord]: ...

    def forget_weld(self, weld_id: str) -> None: ...


def report_interrupted(outbox: OpenWelds, emit: Callable[[WeldResult], None]) -> list[str]:
    """Emit a result for every weld the outbox knows as open; returns their weld_ids. Each
    stored result closes its weld in the outbox; a row that cannot be read as a weld start
    is logged and dropped (it can never get a result)."""
    try:
        records = outbox.open_welds()
    except OutboxError as exc:
        log.error("interrupted_welds_unreadable", error=str(exc))
        return []
    reported = []
    for record in records:
        try:
            result = interrupted_result(record)
        except (MalformedMessageError, ValidationError) as exc:
            log.error("interrupted_weld_unusable", weld_id=record.weld_id, error=str(exc))
            with contextlib.suppress(OutboxError):
                outbox.forget_weld(record.weld_id)
            continue
        emit(result)
        reported.append(result.weld_id)
    if reported:
        log.warning("interrupted_welds_reported", weld_ids=reported)
    return reported


def interrupted_message(welds: list[str]) -> str:
    """The operator's message for the welds a killed daemon left open."""
    return (
        f"{len(welds)} weld(s) were open when the daemon last stopped without closing them "
        f"(killed or aborted): {', '.join(welds)}; their results are published as degraded "
        "(interrupted)"
    )
