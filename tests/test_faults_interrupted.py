"""A weld open when the daemon is killed (SIGKILL, or systemd's watchdog abort) gets its
result from the next daemon: marked degraded `interrupted`, with the start's weld_id and the
verdict of the windows judged before the kill.

The bookkeeping runs on a real SQLite outbox file; the end-to-end test kills `weldmon run`
mid-weld (PulseAudio null sink, real Mosquitto) and starts it again.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.audio import read_recording
from monitor.events import Source, WeldProgress, WeldResult, WeldStart, parse_event
from monitor.publish.interrupted import interrupted_result, report_interrupted
from monitor.publish.outbox import NewMessage, Outbox
from monitor.runtime import OUTBOX_FILE
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker
from tests.support.daemon import WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ

SHA = "ab" * 32
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _start(weld_id: str) -> WeldStart:
    return WeldStart(
        daemon_version="0.1.0",
        model_sha256=SHA,
        station="cell1",
        weld_id=weld_id,
        source=Source(type="device", name="pulse"),
        started_at=T0,
        segmentation="gate",
        threshold=0.5,
    )


def _store(outbox: Outbox, event: WeldStart | WeldResult) -> None:
    outbox.store(
        [
            NewMessage(
                "t",
                event.to_json(),
                1,
                False,
                event.event_id,
                opens_weld=event.weld_id if isinstance(event, WeldStart) else None,
                closes_weld=event.weld_id if isinstance(event, WeldResult) else None,
            )
        ]
    )


def test_a_start_without_a_result_is_reported_with_the_verdict_of_its_judged_windows(
    tmp_path: Path,
) -> None:
    path = tmp_path / OUTBOX_FILE
    with Outbox(path, 100) as outbox:
        for weld_id in ("judged", "unjudged", "finished"):
            _store(outbox, _start(weld_id))
        outbox.note_progress("judged", 1, 0.4, 0.4, 1.0)
        outbox.note_progress("judged", 2, 0.7, 0.9, 2.0)
        finished = interrupted_result(outbox.open_welds()[2])  # any result closes it
        _store(outbox, finished)
    with Outbox(path, 100) as reopened:  # a new process after the kill
        emitted: list[WeldResult] = []
        ids = report_interrupted(reopened, emitted.append)
    assert ids == ["judged", "unjudged"]
    judged, unjudged = emitted
    assert (judged.weld_id, judged.degraded_reasons, judged.end_reason) == (
        "judged",
        ["interrupted"],
        "shutdown",
    )
    assert (judged.judged, judged.n_windows, judged.p_defect, judged.label) == (True, 2, 0.7, 1)
    assert (judged.window_p_max, judged.ended_at) == (0.9, T0 + timedelta(seconds=2))
    assert (unjudged.judged, unjudged.n_windows, unjudged.p_defect) == (False, 0, 0.0)
    assert unjudged.ended_at == unjudged.started_at == T0


def test_progress_notes_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    """note_progress skips the fsync: what it wrote must still be there after the writing
    process dies without closing the database."""
    path = tmp_path / OUTBOX_FILE
    with Outbox(path, 100) as outbox:
        _store(outbox, _start("w"))
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from monitor.publish.outbox import Outbox\n"
        "o = Outbox(Path(sys.argv[1]), 100)\n"
        "o.note_progress('w', 3, 0.25, 0.5, 3.0)\n"
        "print('noted', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "noted"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    with Outbox(path, 100) as outbox:
        (record,) = outbox.open_welds()
    assert (record.n_windows, record.p_defect, record.elapsed_s) == (3, 0.25, 3.0)


STARTUP_TIMEOUT_S = 90.0
PROGRESS_BEFORE_KILL = 3  # windows judged (and seen on MQTT) before the SIGKILL
LONG_WELD_RUN = 4  # its arc burns for ~25 s: still open when the daemon is killed


@pytest.mark.audio
@pytest.mark.broker
@pytest.mark.real_data
@pytest.mark.slow
def test_a_weld_open_at_sigkill_gets_an_interrupted_result_after_restart(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    recordings: list,
    tmp_path: Path,
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(tmp_path, artifact, mosquitto)
    pulse.create_sink("killed", RATE_HZ, 1)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    audio = read_recording(recordings[LONG_WELD_RUN].flac, RATE_HZ).samples[0]
    first = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "first.log")
    player = None
    try:
        first.wait_for_log("ready", STARTUP_TIMEOUT_S)
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
        player = pulse.play_array(audio[:, None], RATE_HZ, "killed")
        (start,) = collector.wait_for("weldmon/cell1/weld/start", 1, 30.0)
        progress = collector.wait_for("weldmon/cell1/weld/progress", PROGRESS_BEFORE_KILL, 30.0)
        first.proc.send_signal(signal.SIGKILL)
        first.kill()
        player.kill()
        player.wait()
        assert not collector.matching("weldmon/+/weld/result"), "killed before the weld ended"
        last_seen = parse_event(progress[-1].payload)
        assert isinstance(last_seen, WeldProgress)

        second = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "second.log")
        try:
            (message,) = collector.wait_for("weldmon/+/weld/result", 1, STARTUP_TIMEOUT_S)
            errors = collector.wait_for("weldmon/error", 1, 30.0)
            code = second.stop()
        finally:
            second.kill()
    finally:
        if player is not None and player.poll() is None:
            player.kill()
            player.wait()
        first.kill()
    assert code == 0, second.tail()
    result = json.loads(message.payload)
    assert result["weld_id"] == json.loads(start.payload)["weld_id"]
    assert result["degraded"] is True and result["degraded_reasons"] == ["interrupted"]
    assert result["judged"] is True
    assert result["n_windows"] >= last_seen.n_windows
    assert result["label"] == int(result["p_defect"] >= result["threshold"])
    assert "interrupted_welds" in [json.loads(e.payload)["code"] for e in errors]
    db = sqlite3.connect(tmp_path / "state" / OUTBOX_FILE)
    try:
        assert db.execute("SELECT COUNT(*) FROM open_welds").fetchone()[0] == 0
    finally:
        db.close()
