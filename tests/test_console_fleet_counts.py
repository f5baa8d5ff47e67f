"""The overview's station cards agree with themselves: verdict rows in time order, alert
counts that match the ALERT badges, replayed results shown as a replay rather than as a
daemon of UNKNOWN state; and alerting hygiene: per-station mute and cooldown."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.console.fleet import Fleet
from monitor.console.store import WeldStore
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


def _alert_at(r: WeldResult, seconds: float) -> WeldAlert:
    return _alert(r).model_copy(update={"at": r.started_at + timedelta(seconds=seconds)})


def test_a_muted_station_raises_no_banner_but_its_weld_still_says_alert() -> None:
    fleet = Fleet("b:1883")
    r = result()
    fleet.set_muted("weldmon", "cell1", "ana")
    fleet.apply_weld("weldmon", _start(r))
    fleet.apply_weld("weldmon", _alert(r))
    station = fleet.groups["weldmon"].stations["cell1"]
    assert fleet.active_alerts() == [] and station.silenced == 1
    assert station.current is not None and station.current.alerted
    fleet.apply_weld("weldmon", r)
    assert station.verdicts[0].alerted and station.alerts == 1


def test_within_the_cooldown_a_stations_next_alerts_raise_no_banner() -> None:
    fleet = Fleet("b:1883", alert_cooldown_s=60.0)
    welds = [result(start=T0 + timedelta(seconds=s)) for s in (0, 30, 90)]
    shown = []
    for r in welds:
        fleet.apply_weld("weldmon", _start(r))
        fleet.apply_weld("weldmon", _alert_at(r, 1.0))
        shown.append(bool(fleet.active_alerts()))
        fleet.apply_weld("weldmon", r)
    # 0 s: banner; 30 s: within 60 s of it, none; 90 s: 89 s after the last banner, shown.
    assert shown == [True, False, True]
    assert fleet.groups["weldmon"].stations["cell1"].silenced == 1


def test_mutes_are_kept_in_the_history_file_across_a_restart(tmp_path: Path) -> None:
    store = WeldStore(tmp_path / "h.sqlite3")
    store.set_mute("plant1/line3", "cell1", "ana", T0)
    store.set_mute("plant1/line3", "cell2", "ana", T0)
    store.set_mute("plant1/line3", "cell2", None, T0)
    store.close()
    assert WeldStore(tmp_path / "h.sqlite3").mutes() == [("plant1/line3", "cell1", "ana")]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--mute", "cell1"], "--mute: give PREFIX/STATION"),
        (["--mute", "plant1/bad station"], "--mute: give PREFIX/STATION"),
        (["--alert-cooldown", "-5"], "--alert-cooldown must be"),
        (["--alert-cooldown", "nan"], "--alert-cooldown must be"),
    ],
)
def test_bad_mute_and_cooldown_arguments_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "weldmon.cli", "console", "--broker", "127.0.0.1:1",
         "--db", str(tmp_path / "h.sqlite3"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and says in done.stderr, done.stderr
