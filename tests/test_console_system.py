"""The system page's rows: each daemon's state, uptime since its last connect, the model it
names and the one its welds were judged by, its newest weld, and its latest health errors
(outbox degraded, device lost), from the console's live state."""

from __future__ import annotations

from datetime import timedelta

from monitor.console.fleet import Fleet
from monitor.console.system import daemon_health, duration_text
from monitor.events import ErrorEvent, StatusMessage
from tests.test_console_parts import SHA, T0, result

OTHER_SHA = "0" * 64


def _error(code: str, message: str, minutes: float) -> ErrorEvent:
    return ErrorEvent(
        daemon_version="0.1.0",
        model_sha256=SHA,
        code=code,
        message=message,
        station="cell1",
        emitted_at=T0 + timedelta(minutes=minutes),
    )


def test_a_daemons_row_says_uptime_model_newest_weld_and_latest_health_errors() -> None:
    fleet = Fleet("b:1883")
    status = StatusMessage(state="online", at=T0, version="0.1.0", model_sha256=SHA,
                           client_id="weldmon-line3")  # fmt: skip
    fleet.apply_status("plant1/line3", status)
    named = result(model_name="fillet-mil", model_version="4")
    fleet.apply_weld("plant1/line3", named)
    fleet.apply_error("plant1/line3", _error("outbox_degraded", "disk full: held in memory", 1))
    fleet.apply_error("plant1/line3", _error("device_lost", "the sound device stopped", 2))
    fleet.apply_error("plant1/line3", _error("reload_failed", "bad artifact", 3))
    row = daemon_health(fleet.groups["plant1/line3"], T0 + timedelta(hours=2, minutes=5))
    assert (row.state, row.uptime_s, row.version) == ("online", 7500.0, "0.1.0")
    assert (row.model, row.model_sha256, row.model_differs) == ("fillet-mil 4", SHA, False)
    assert row.last_weld_at == named.ended_at and row.stations == 1
    assert [h.code for h in row.health] == ["device_lost", "outbox_degraded"]  # newest first
    assert row.outbox == "degraded: disk full: held in memory"
    assert duration_text(row.uptime_s) == "2 h 5 min"


def test_a_weld_judged_by_another_model_than_the_status_names_is_pointed_out() -> None:
    fleet = Fleet("b:1883")
    fleet.apply_weld("p", result().model_copy(update={"model_sha256": OTHER_SHA}))
    replay_only = daemon_health(fleet.groups["p"], T0)
    assert replay_only.uptime_s is None and replay_only.outbox == "no problem reported"
    status = StatusMessage(state="offline", at=T0, version="0.1.0", model_sha256=SHA,
                           client_id="weldmon-p")  # fmt: skip
    fleet.apply_status("p", status)
    row = daemon_health(fleet.groups["p"], T0 + timedelta(days=3, hours=1))
    assert row.model_differs and row.uptime_s is None  # offline: no uptime
    assert duration_text(3 * 86_400 + 3600) == "3 d 1 h" and duration_text(42) == "42 s"
