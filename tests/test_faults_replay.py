"""`weldmon replay` beside a live daemon: the README's own pattern, `replay --config <the
daemon's config>`, with the daemon running on a PulseAudio null sink against a real
Mosquitto, and the daemon's outbox locked by another process meanwhile.

Replay must never use the daemon's client id (the broker would drop the daemon), its outbox,
or its retained status; it publishes only with `--publish`, every event marked
``replay: true``; and `--model` runs it without any config.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.events import parse_status
from monitor.runtime import OUTBOX_FILE
from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker
from tests.support.daemon import REPO_ROOT, WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ
from tests.support.sqlite_lock import SqliteLock

pytestmark = [pytest.mark.audio, pytest.mark.broker, pytest.mark.real_data, pytest.mark.slow]

STARTUP_TIMEOUT_S = 90.0
REPLAY_TIMEOUT_S = 300.0
RESULT_TIMEOUT_S = 30.0
REPLAYED = [4, 17]  # two real recordings, one weld each in file mode


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", "replay", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=REPLAY_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )


def test_replay_beside_a_live_daemon_leaves_its_session_status_and_outbox_alone(
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    recordings: list,
    tmp_path: Path,
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    config = write_monitor_config(tmp_path, artifact, mosquitto, segmentation={"mode": "gate"})
    files = [str(recordings[i].flac) for i in REPLAYED]
    pulse.create_sink("live", RATE_HZ, 1)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log")
    try:
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)

        # 1. Without --publish: stdout only, nothing on the broker, a locked outbox is no matter.
        with SqliteLock(tmp_path / "state" / OUTBOX_FILE):
            quiet = replay("--config", str(config), "--segmentation", "file", *files)
        seen_after_quiet = [m.topic for m in collector.messages]

        # 2. With --publish: the events arrive, marked, on the production topics.
        loud = replay("--config", str(config), "--segmentation", "file", "--publish", *files)
        published = collector.wait_for("weldmon/+/weld/result", len(files), RESULT_TIMEOUT_S)
        late = mqtt_subscriber(mosquitto, ["weldmon/status"])
        (retained,) = late.wait_for("weldmon/status", 1)

        # 3. --model alone: no config at all.
        bare = replay("--model", str(artifact), files[0])
        code = daemon.stop()
    finally:
        daemon.kill()

    assert len(daemon.events("mqtt.connected")) == 1, "the daemon was never dropped"
    assert not daemon.events("mqtt.disconnected")
    assert "already connected" not in mosquitto.log_tail(10_000)
    status = [parse_status(m.payload).state for m in collector.matching("weldmon/status")]
    assert status == ["online", "stopped"], "only the daemon's own online, then its stopped"
    assert parse_status(retained.payload).state == "online", "the daemon's status stays retained"

    assert quiet.returncode == 0, quiet.stderr
    stdout = [json.loads(line) for line in quiet.stdout.splitlines()]
    assert [r["kind"] for r in stdout] == ["weld_result"] * len(files), "no file skipped"
    assert all(r["replay"] is True for r in stdout)
    assert seen_after_quiet == ["weldmon/status"], "replay without --publish sent nothing"

    assert loud.returncode == 0, loud.stderr
    events = [json.loads(m.payload) for m in collector.messages if m.topic != "weldmon/status"]
    # The live daemon may publish its own events meanwhile (a silent sink: dead_microphone).
    replayed = [e for e in events if (e.get("source") or {}).get("type") != "device"]
    assert {e["kind"] for e in replayed} >= {"weld_start", "weld_result"}
    assert all(e["replay"] is True for e in replayed), "every published event is marked"
    assert not any(e["replay"] for e in events if e not in replayed), "the daemon's are not"
    assert {json.loads(m.payload)["source"]["name"] for m in published} == set(files)

    assert bare.returncode == 0, bare.stderr
    (only,) = [json.loads(line) for line in bare.stdout.splitlines()]
    assert only["kind"] == "weld_result" and only["replay"] is True
    assert code == 0, daemon.tail()
