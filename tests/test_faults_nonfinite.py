"""NaN/Inf audio through `weldmon replay` (the daemon's pipeline) on real files: a weld whose
every window is repaired NaN is not judged (`judged: false`), never a good weld; a short
burst of NaN inside a real weld still leaves a judged, degraded verdict."""

from __future__ import annotations

import json
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
REPLAY_TIMEOUT_S = 300.0
REPLAY = [sys.executable, "-m", "weldmon.cli", "replay", "--no-progress"]


def replay(artifact: Path, *files: Path) -> list[dict]:
    done = subprocess.run(
        [*REPLAY, "--model", str(artifact), "--segmentation", "file", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=REPLAY_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_all_nan_audio_is_not_judged_and_a_short_nan_burst_still_is(
    recordings: list, tmp_path: Path
) -> None:
    artifact = export_untrained(tmp_path / "artifact").path
    real = read_recording(recordings[4].flac, RATE).samples[0]
    all_nan = tmp_path / "all-nan.wav"
    sf.write(all_nan, np.full(5 * RATE, np.nan, np.float32), RATE, subtype="FLOAT")
    burst = real.copy()
    burst[RATE : RATE + 200] = np.nan  # 12.5 ms of a ~30 s weld
    with_burst = tmp_path / "burst.wav"
    sf.write(with_burst, burst, RATE, subtype="FLOAT")

    nan_result, burst_result = replay(artifact, all_nan, with_burst)

    assert nan_result["judged"] is False, nan_result
    assert (nan_result["n_windows"], nan_result["p_defect"]) == (0, 0.0)
    assert "nonfinite_samples" in nan_result["degraded_reasons"]
    assert "too_short" not in nan_result["degraded_reasons"], "5 whole windows were there"
    assert "inference_failed" not in nan_result["degraded_reasons"]
    assert burst_result["judged"] is True
    assert burst_result["n_windows"] == len(real) // RATE
    assert burst_result["degraded_reasons"] == ["nonfinite_samples"]
