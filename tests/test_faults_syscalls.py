"""The units refuse `@privileged @resources` with EPERM; torch calls some of those (mbind and
sched_setaffinity here: NUMA placement of its arenas, pinning of its OpenMP threads). The
refusal is kept on purpose (docs/operations.md): these tests run replay and `weldmon run`
under exactly the units' refusals (strace fault injection, the groups expanded by
`systemd-analyze`) and show that torch did make refused calls and that the verdicts are
the same as without them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.artifacts import export_untrained
from tests.support.broker import MosquittoBroker
from tests.support.daemon import REPO_ROOT, WeldmonRun, write_monitor_config
from tests.support.pulse import PulseAudio
from tests.support.shifts import RATE_HZ, as_frames, build_shift
from tests.support.syscall_refusals import denied_groups, expand, refused, refusing
from tests.test_systemd_units import SINGLE, TEMPLATE, parse_unit

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

REPLAY_TIMEOUT_S = 600.0
STARTUP_TIMEOUT_S = 120.0  # strace slows start-up a little
RESULT_TIMEOUT_S = 30.0
RUNS = [4, 17]  # two real recordings
REPLAY = [sys.executable, "-m", "weldmon.cli", "replay", "--no-progress"]
VERDICT = ("label", "p_defect", "n_windows", "window_p_max", "duration_s", "judged")


@pytest.fixture(scope="module")
def unit_refusals() -> list[str]:
    service = parse_unit(SINGLE)["Service"]
    assert denied_groups(service) == denied_groups(parse_unit(TEMPLATE)["Service"])
    assert service["SystemCallErrorNumber"] == ["EPERM"], "refused calls fail, never kill"
    calls = expand(denied_groups(service))
    assert {"mbind", "set_mempolicy", "sched_setaffinity", "sched_setscheduler"} <= set(calls)
    return calls


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_untrained(tmp_path_factory.mktemp("syscalls")).path  # TorchScript: torch


def _replay(command_prefix: list[str], artifact: Path, files: list[str]) -> list[dict]:
    done = subprocess.run(
        [*command_prefix, *REPLAY, "--model", str(artifact), "--segmentation", "file", *files],
        capture_output=True,
        text=True,
        timeout=REPLAY_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Operation not permitted" not in done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_replay_under_the_units_refusals_gives_the_same_verdicts(
    unit_refusals: list[str], artifact: Path, recordings: list, tmp_path: Path
) -> None:
    files = [str(recordings[i].flac) for i in RUNS]
    trace = tmp_path / "strace.log"
    plain = _replay([], artifact, files)
    under = _replay(refusing(unit_refusals, trace), artifact, files)
    made = refused(trace)
    assert made, "torch made none of the refused calls: the test would prove nothing"
    assert set(made) <= set(unit_refusals)
    assert [[r[k] for k in VERDICT] for r in under] == [[r[k] for k in VERDICT] for r in plain]


@pytest.mark.audio
@pytest.mark.broker
def test_the_daemon_judges_welds_under_the_units_refusals(
    unit_refusals: list[str],
    artifact: Path,
    pulse: PulseAudio,
    mosquitto: MosquittoBroker,
    mqtt_subscriber,
    recordings: list,
    tmp_path: Path,
) -> None:
    config = write_monitor_config(tmp_path, artifact, mosquitto)
    pulse.create_sink("filtered", RATE_HZ, 1)
    collector = mqtt_subscriber(mosquitto, ["weldmon/#"])
    trace = tmp_path / "strace.log"
    wrapper = refusing(unit_refusals, trace)
    daemon = WeldmonRun(config, pulse.subprocess_env(), tmp_path / "daemon.log", wrapper=wrapper)
    player = None
    try:
        daemon.wait_for_log("ready", STARTUP_TIMEOUT_S)
        collector.wait_for("weldmon/status", 1, STARTUP_TIMEOUT_S)
        shift = build_shift([recordings[i].flac for i in RUNS])
        player = pulse.play_array(as_frames(shift), RATE_HZ, "filtered")
        results = collector.wait_for(
            "weldmon/+/weld/result", len(RUNS), shift.size / RATE_HZ + RESULT_TIMEOUT_S
        )
        code = daemon.stop()
    finally:
        if player is not None and player.poll() is None:
            player.kill()
            player.wait()
        daemon.kill()
    assert code == 0, daemon.tail()
    assert refused(trace), "no refused call was made"
    assert "Operation not permitted" not in daemon.text()
    for message in results:
        result = json.loads(message.payload)
        assert result["judged"] and result["n_windows"] >= 1
        assert not result["degraded_reasons"], result
