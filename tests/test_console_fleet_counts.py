"""The overview's station cards agree with themselves: verdict rows in time order, alert
counts that match the ALERT badges, and replayed results shown as a replay rather than as a
daemon of UNKNOWN state."""

from __future__ import annotations

from datetime import timedelta

from monitor.console.fleet import Fleet
from monitor.events import StatusMessage, WeldAlert, WeldResult, WeldStart
from tests.test_console_parts import SHA, T0, result


def _alert(r: WeldResult) -> WeldAlert:
    return WeldAlert(
        daemon_version="0.1.0",
        model_sha256=SHA,
        station=r.station,
        weld_id=r.weld_id,
        source=r.source,
        p_defect=0.8,
        threshold=0.705,
        n_windows=2,
        started_at=r.started_at,
        at=r.started_at,
    )


def _start(r: WeldResult) -> WeldStart:
    return WeldStart(
        daemon_version="0.1.0",
        model_sha256=SHA,
        station=r.station,
        weld_id=r.weld_id,
        source=r.source,
        started_at=r.started_at,
        segmentation="gate",
        threshold=0.705,
    )


def test_verdict_rows_are_newest_first_whatever_order_results_arrive_in() -> None:
    fleet = Fleet("b:1883", history=3)
    welds = [result(start=T0 + timedelta(minutes=m)) for m in (0, 1, 2, 3)]
    for r in (welds[2], welds[0], welds[3], welds[1]):
        fleet.apply_weld("weldmon", r)
    station = fleet.groups["weldmon"].stations["cell1"]
    assert [v.weld_id for v in station.verdicts] == [w.weld_id for w in welds[3:0:-1]]


def test_a_weld_that_alerted_keeps_its_badge_when_the_next_weld_starts_before_its_result() -> None:
    fleet = Fleet("b:1883")
    first, second = result(), result(start=T0 + timedelta(seconds=5))
    fleet.apply_weld("weldmon", _start(first))
    fleet.apply_weld("weldmon", _alert(first))
    fleet.apply_weld("weldmon", _alert(first).model_copy(update={"event_id": second.event_id}))
    station = fleet.groups["weldmon"].stations["cell1"]
    assert station.alerts == 1  # one weld alerted, however many alert messages it sent
    fleet.apply_weld("weldmon", _start(second))  # inference lags: the next weld is on
    _, facts = fleet.apply_weld("weldmon", first)
    assert facts.alerted and station.verdicts[0].alerted
    badges = sum(v.alerted for v in station.verdicts)
    assert station.alerts == badges == 1


def test_replayed_results_show_as_a_replay_until_a_daemon_says_its_state() -> None:
    fleet = Fleet("b:1883")
    change, _ = fleet.apply_weld("replayed", result().model_copy(update={"replay": True}))
    group = fleet.groups["replayed"]
    assert group.state == "replay" and change is not None and change.what == "group"
    fleet.apply_weld("mixed", result(station="cell2").model_copy(update={"replay": True}))
    fleet.apply_weld("mixed", result(station="cell2", start=T0 + timedelta(minutes=1)))
    assert fleet.groups["mixed"].state == "unknown"  # a live daemon without a status yet
    status = StatusMessage(
        state="online", at=T0, version="0.1.0", model_sha256=SHA, client_id="weldmon-cell"
    )
    fleet.apply_status("replayed", status)
    assert group.state == "online"
