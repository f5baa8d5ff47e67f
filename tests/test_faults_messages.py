"""Replay's messages for what a new user feeds it (real files on disk, the CLI as a
subprocess): a missing file, random bytes, a folder without audio, and Ctrl-C part-way."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deploy.audio import read_recording
from tests.support.artifacts import export_untrained
from tests.support.daemon import REPO_ROOT

pytestmark = pytest.mark.real_data

RATE = 16_000
TIMEOUT_S = 300.0
REPLAY = [sys.executable, "-m", "weldmon.cli", "replay", "--no-progress"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_untrained(tmp_path_factory.mktemp("messages")).path


def test_missing_random_and_empty_inputs_each_get_a_plain_reason(
    artifact: Path, tmp_path: Path
) -> None:
    random_bytes = tmp_path / "noise.flac"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    empty = tmp_path / "no-audio-here"
    empty.mkdir()
    (empty / "notes.txt").write_text("no recordings\n")
    missing = tmp_path / "gone.flac"
    done = subprocess.run(
        [*REPLAY, "--model", str(artifact), str(missing), str(random_bytes), str(empty)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    messages = [json.loads(line)["message"] for line in done.stdout.splitlines()]
    assert messages == [
        f"{missing}: no such file",
        f"{random_bytes}: unreadable, not an audio format libsndfile knows",
        f"{empty}: a folder with no audio files (.aif, .aiff, .au, .caf, .flac, .mp3, .oga, "
        ".ogg, .opus, .w64, .wav) in it",
    ]
    assert "System error" not in done.stdout + done.stderr
    assert "possibly a pipe" not in done.stdout + done.stderr
    assert "3 file(s), 3 failed" in done.stderr


def sigint_as_in_a_terminal() -> None:
    """In the child before exec: SIGINT at its default. A shell without job control (a
    script's ``pytest &``, nohup, some CI runners) starts background jobs with SIGINT ignored,
    children inherit that, and Python keeps an inherited SIG_IGN, so asyncio never installs
    its Ctrl-C handler: the replay ran on to exit 0 (the flaky run of this test). A terminal
    delivers Ctrl-C to a foreground job at its default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_replay_ends_with_a_message_and_keeps_the_results_printed(
    artifact: Path, recordings: list, tmp_path: Path
) -> None:
    audio = read_recording(recordings[4].flac, RATE).samples[0]
    short = tmp_path / "short.flac"
    sf.write(short, audio[: 2 * RATE], RATE)
    files = [str(short), str(recordings[4].flac)]
    proc = subprocess.Popen(
        [*REPLAY, "--model", str(artifact), "--segmentation", "file", "--realtime", *files],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        preexec_fn=sigint_as_in_a_terminal,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # the short file's result: now mid-file 2
        proc.send_signal(signal.SIGINT)
        rest, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first["kind"] == "weld_result" and first["source"]["name"] == str(short)
    assert proc.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "weldmon replay: interrupted" in stderr
    assert rest == "", "nothing half-written after the interrupt"
