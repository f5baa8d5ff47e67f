"""The console's parts without a browser: prefix patterns, the live state's rules, the SQLite
history (a real file), clip paths and promotion (real files, the daemon's clip store), and
the security checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from deploy.dataset_layout import ClipError
from monitor.console.api import csv_lines, parse_filter
from monitor.console.clipfiles import ClipFolders, UnsafePathError, inside
from monitor.console.fleet import Fleet
from monitor.console.records import Review, WeldFilter, WeldRow
from monitor.console.security import (
    ConsoleSecurityError,
    CsrfGuard,
    ListenAddress,
    check_exposure,
    is_loopback,
    parse_listen,
    read_auth_file,
)
from monitor.console.store import StoreError, WeldStore
from monitor.events import Source, WeldAlert, WeldProgress, WeldResult, new_weld_id
from monitor.live.topics import PrefixError, classify, parse_prefix
from monitor.ops.clip_policy import ClipsConfig
from monitor.ops.clips import ClipStore
from training.dataset import index_dataset

SHA = "9fa888fd5505fb57c8c10ffe5d76129779659e3bff0531a420d717f81f9bc83f"
T0 = datetime(2026, 3, 2, 9, 15, 4, 250000, tzinfo=UTC)
RATE = 16_000


def result(station: str = "cell1", label: int = 1, start: datetime = T0, **extra) -> WeldResult:
    probs = [0.2, 0.9, 0.8] if label else [0.1, 0.2, 0.1]
    return WeldResult(
        daemon_version="0.1.0",
        model_sha256=SHA,
        station=station,
        weld_id=new_weld_id(station, start),
        source=Source(type="device", name="mic"),
        started_at=start,
        ended_at=start + timedelta(seconds=3),
        duration_s=3.0,
        label=label,
        label_name="defect" if label else "good_weld",
        p_defect=max(probs),
        threshold=0.705,
        n_windows=3,
        window_p_max=max(probs),
        window_probs=probs,
        degraded=False,
        dropped_frames=0,
        end_reason="gate",
        **extra,
    )


def progress(r: WeldResult, index: int) -> WeldProgress:
    return WeldProgress(
        daemon_version="0.1.0",
        model_sha256=SHA,
        station=r.station,
        weld_id=r.weld_id,
        source=r.source,
        window_index=index,
        window_p_defect=0.5,
        p_defect=0.5,
        n_windows=index + 1,
        threshold=0.705,
        elapsed_s=(index + 1) * 1.0,
    )


# --- prefixes and topics ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "/a", "a/", "a//b", "$SYS", "a/#", "a/+/b", "a/b+"])
def test_bad_prefixes_are_refused(bad: str) -> None:
    with pytest.raises(PrefixError):
        parse_prefix(bad)


def test_a_wildcard_prefix_groups_topics_by_daemon_prefix() -> None:
    patterns = [parse_prefix("plant1/+"), parse_prefix("weldmon")]
    assert [p.subscription for p in patterns] == ["plant1/+/#", "weldmon/#"]
    route = classify(patterns, "plant1/line3/cell1/weld/result")
    assert (route.prefix, route.kind, route.station) == ("plant1/line3", "weld", "cell1")
    assert classify(patterns, "plant1/line4/status").kind == "status"
    assert classify(patterns, "weldmon/error").prefix == "weldmon"
    assert classify(patterns, "weldmon/cell1/trigger").kind == "ignored"
    assert classify(patterns, "other/cell1/weld/result") is None
    assert classify(patterns, "plant1/status") is None  # no daemon level under plant1/+


def test_overlapping_prefixes_take_the_most_specific() -> None:
    patterns = [parse_prefix("plant1/+"), parse_prefix("plant1/line3/+")]
    route = classify(patterns, "plant1/line3/a/cell9/weld/start")
    assert (route.prefix, route.station) == ("plant1/line3/a", "cell9")


# --- live state ----------------------------------------------------------------------------


def test_live_state_dedupes_and_ignores_progress_after_the_result() -> None:
    fleet = Fleet("b:1883")
    r = result()
    assert fleet.is_new(r.event_id) and not fleet.is_new(r.event_id)
    fleet.apply_weld("weldmon", progress(r, 0))  # mid-weld start: progress opens the weld
    station = fleet.groups["weldmon"].stations["cell1"]
    assert station.current is not None and station.current.window_s == pytest.approx(1.0)
    alert = WeldAlert(
        **{k: getattr(r, k) for k in ("daemon_version", "model_sha256", "station", "weld_id")},
        source=r.source,
        p_defect=0.8,
        threshold=0.705,
        n_windows=2,
        started_at=r.started_at,
        at=r.started_at,
    )
    fleet.apply_weld("weldmon", alert)
    assert [s.name for s, _ in fleet.active_alerts()] == ["cell1"]
    _, facts = fleet.apply_weld("weldmon", r)
    assert facts.alerted and facts.window_s == pytest.approx(1.0)
    assert station.current is None and station.verdicts[0].alerted
    change, _ = fleet.apply_weld("weldmon", progress(r, 3))
    assert change is None and station.current is None  # late progress of a finished weld


# --- history -------------------------------------------------------------------------------


def test_history_filters_survives_reopening_and_ignores_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = WeldStore(path)
    rows = [
        result("cell1", 1, T0, context={"part_id": "P-17"}),
        result("cell1", 0, T0 + timedelta(days=1)),
        result("cell2", 1, T0 + timedelta(days=2)),
    ]
    for r in rows:
        assert store.add_result("weldmon", r, T0, False, None)
    assert not store.add_result("weldmon", rows[0], T0, False, None)
    store.close()
    store = WeldStore(path)
    assert [w.weld_id for w in store.welds(WeldFilter())] == [r.weld_id for r in rows[::-1]]
    assert store.count(WeldFilter(station="cell1")) == 2
    assert store.count(WeldFilter(label=1)) == 2
    day2 = T0 + timedelta(days=1)
    assert store.count(WeldFilter(since=day2, until=day2 + timedelta(hours=23))) == 1
    assert [w.weld_id for w in store.welds(WeldFilter(part_id="P-17"))] == [rows[0].weld_id]
    assert store.count(WeldFilter(part_id="P-99")) == 0
    assert [w.result for w in store.welds(WeldFilter(flagged=True))] == [rows[2], rows[0]]


def test_retention_keeps_reviews_and_their_false_alarm_counts(tmp_path: Path) -> None:
    store = WeldStore(tmp_path / "h.sqlite3", retention_days=30, max_welds=2)
    old = result("cell1", 1, T0 - timedelta(days=40))
    kept = [result("cell1", 1, T0 + timedelta(minutes=i)) for i in range(3)]
    for r in [old, *kept]:
        store.add_result("weldmon", r, T0, False, None)
    review = Review(old.weld_id, "weldmon", "cell1", "good", "00", "good_weld", 1, False, "ana", T0)
    store.add_review(review)
    with pytest.raises(StoreError):
        store.add_review(review)
    assert store.apply_retention(T0 + timedelta(hours=1)) == 2  # by age, then by count
    assert [w.weld_id for w in store.welds(WeldFilter())] == [kept[2].weld_id, kept[1].weld_id]
    counts = {c.station: c for c in store.station_counts()}
    assert counts["cell1"].false_alarms == 1 and counts["cell1"].welds == 2


def test_a_file_that_is_not_a_history_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "h.sqlite3"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError):
        WeldStore(bad)


# --- clips and promotion -------------------------------------------------------------------


def _clip(state_dir: Path, r: WeldResult) -> Path:
    tone = 0.1 * np.sin(np.arange(3 * RATE) * 2 * np.pi * 440 / RATE)
    path = ClipStore(state_dir, ClipsConfig(policy="all")).write(r, tone, RATE)
    assert path is not None
    return path


def test_clips_are_found_inside_the_clips_folder_only(tmp_path: Path) -> None:
    r = result()
    audio = _clip(tmp_path / "state", r)
    folders = ClipFolders(tmp_path / "state" / "clips", tmp_path / "dataset")
    by_layout = folders.find_clip(r.station, r.weld_id, None, None)
    assert by_layout.path == audio.resolve() and by_layout.origin == "layout"
    assert folders.find_clip(r.station, r.weld_id, str(audio), None).origin == "clip_path"
    outside = tmp_path / "secret.flac"
    outside.write_bytes(b"fLaC")
    for escaping in (str(outside), "../../secret.flac", "unreviewed/../../../secret.flac"):
        found = folders.find_clip(r.station, "other-weld", escaping, None)
        assert found.path is None and "refused" in (found.refused or "")
    assert folders.counters["clip_path_refused"] == 3
    assert folders.find_clip(r.station, "../../etc", None, None).path is None
    # A clip folder that is a symlink to somewhere else is outside too.
    elsewhere = tmp_path / "elsewhere" / "w1"
    elsewhere.mkdir(parents=True)
    (elsewhere / "w1.flac").write_bytes(b"fLaC")
    (tmp_path / "state/clips/unreviewed/cell1/w1").symlink_to(elsewhere)
    assert folders.find_clip("cell1", "w1", None, None).path is None
    with pytest.raises(UnsafePathError):
        inside(tmp_path / "state", Path("clips/../../elsewhere"))


def test_promotion_writes_the_dataset_layout_that_training_reads(tmp_path: Path) -> None:
    r = result()
    audio = _clip(tmp_path / "state", r)
    folders = ClipFolders(tmp_path / "state" / "clips", tmp_path / "dataset")
    for bad in ("../up", ".hidden", "a/b", ""):
        with pytest.raises(ClipError):
            folders.promote(audio, bad, "07")
    relative = folders.promote(audio, "weldmon_cell1_20260302", "07")
    run_id = f"{r.weld_id}-07"
    assert relative == f"defect_data_weld/weldmon_cell1_20260302/{run_id}/{run_id}.flac"
    assert not audio.exists()
    index = index_dataset(tmp_path / "dataset")
    assert [(e.run_id, e.label_name) for e in index.entries] == [(run_id, "lack_of_fusion")]
    found = folders.find_clip(r.station, r.weld_id, str(audio), relative)
    assert found.origin == "dataset"


# --- security ------------------------------------------------------------------------------


def test_listen_addresses_and_exposure() -> None:
    assert parse_listen("127.0.0.1:8080") == ListenAddress("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ListenAddress("::1", 0)
    assert parse_listen("localhost").port == 8080
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    check_exposure(ListenAddress("127.0.0.1", 8080), None)
    with pytest.raises(ConsoleSecurityError, match="--auth-file"):
        check_exposure(ListenAddress("0.0.0.0", 8080), None)
    check_exposure(ListenAddress("0.0.0.0", 8080), {"ana": "pw"})
    with pytest.raises(ConsoleSecurityError):
        parse_listen("host:99999")


def test_auth_files_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("# reviewers\nana:s3cret\n")
    path.chmod(0o644)
    with pytest.raises(ConsoleSecurityError, match="chmod 600"):
        read_auth_file(path)
    path.chmod(0o600)
    assert read_auth_file(path) == {"ana": "s3cret"}
    path.write_text("no colon here\n")
    with pytest.raises(ConsoleSecurityError):
        read_auth_file(path)


def test_csrf_guard() -> None:
    guard = CsrfGuard("tok")
    same = {"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080"}
    assert guard.problem({**same, "sec-fetch-site": "same-origin"}, "http", "tok") is None
    assert guard.problem({"host": "h"}, "http", "tok") is None  # a plain client with the token
    assert "CSRF" in guard.problem(same, "http", None)
    assert "CSRF" in guard.problem(same, "http", "other")
    assert "cross-site" in guard.problem({**same, "sec-fetch-site": "cross-site"}, "http", "tok")
    assert "cross-origin" in guard.problem({**same, "origin": "http://evil"}, "http", "tok")
    assert "cross-origin" in guard.problem({**same, "origin": "null"}, "http", "tok")


# --- API helpers ---------------------------------------------------------------------------


def test_filters_and_csv_cells() -> None:
    filters, limit, offset = parse_filter({"station": "plant1/line3|cell1", "label": "defect"})
    assert (filters.prefix, filters.station, filters.label, limit, offset) == (
        "plant1/line3",
        "cell1",
        1,
        500,
        0,
    )
    until = parse_filter({"until": "2026-03-02"})[0].until
    assert until is not None and until.astimezone().hour == 0 and until.astimezone().day == 3
    r = result()

    # A reviewer name a spreadsheet would run as a formula is exported as text.
    review = Review(
        r.weld_id, "weldmon", "cell1", "good", "00", "good_weld", 1, True, "=HYPERLINK(1)", T0
    )
    row = WeldRow("weldmon", r, "2026-03-02T09:15:08.000Z", True, None, review)
    cells = "".join(csv_lines(iter([[row]]))).splitlines()[1].split(",")
    assert cells[:3] == ["weldmon", "cell1", r.weld_id]
    assert "'=HYPERLINK(1)" in cells
