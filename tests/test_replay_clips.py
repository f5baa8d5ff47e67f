"""`weldmon replay --clips DIR`: replayed welds keep their clips like the daemon's, so the
console can play, draw and promote them (the issue: "replayed welds cannot be reviewed")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deploy.audio import read_recording
from deploy.dataset_layout import promote_clip
from monitor.ops.clips import PCM16_FULL_SCALE
from training.dataset import index_dataset

pytestmark = pytest.mark.real_data

RATE = 16_000  # the compat artifact's rate: clips are stored at it
TIMEOUT_S = 300


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", "replay", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_replay_with_clips_keeps_each_welds_whole_clip_in_the_daemons_layout(
    compat_artifact: Path, recordings: list, tmp_path: Path
) -> None:
    clips = tmp_path / "clips"
    files = [recordings[0].flac, recordings[-1].flac]
    done = _replay(
        "--model", str(compat_artifact), "--segmentation", "file", "--clips", str(clips),
        "--clip-policy", "all", *map(str, files),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 2 and "2 clip(s) kept" in done.stderr
    for rec, result in zip([recordings[0], recordings[-1]], results, strict=True):
        clip = Path(result["clip_path"])
        assert clip.is_relative_to(clips) and clip.is_file()
        assert clip.parent == clips / "unreviewed" / result["station"] / result["weld_id"]
        # The whole file (one weld per file), exactly the 16-bit samples the model judged.
        stored, rate = sf.read(clip, dtype="float64")
        assert rate == RATE
        source = read_recording(rec.flac, RATE).samples[0]
        assert stored.size == source.size == round(result["duration_s"] * RATE)
        assert np.max(np.abs(stored - source)) <= 1 / PCM16_FULL_SCALE
        sidecar = json.loads(clip.with_suffix(".json").read_text())
        assert sidecar["result"]["replay"] is True
        assert sidecar["result"]["weld_id"] == result["weld_id"]
        assert len(sidecar["window_probs"]) == result["n_windows"]
    # Promoted as the console would, the replayed clip is a training run like any other.
    dataset = tmp_path / "dataset"
    promote_clip(Path(results[0]["clip_path"]).parent, dataset, "replayed_shift", "07")
    index = index_dataset(dataset)
    assert [e.run_id for e in index.entries] == [f"{results[0]['weld_id']}-07"]


def test_replay_keeps_defect_clips_only_by_the_default_policy(
    compat_artifact: Path, recordings: list, tmp_path: Path
) -> None:
    clips = tmp_path / "clips"
    files = [str(recordings[i].flac) for i in (4, 6, 17)]  # mixed verdicts by the compat model
    done = _replay("--model", str(compat_artifact), "--segmentation", "file", "--clips",
                   str(clips), *files)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    kept = {r["weld_id"] for r in results if r.get("clip_path")}
    assert kept, "the compat artifact judges some of these rows defect"
    assert kept == {r["weld_id"] for r in results if r["label"] == 1}
    on_disk = {p.parent.name for p in clips.glob("unreviewed/*/*/*.flac")}
    assert on_disk == kept


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--clip-policy", "all"], "--clip-policy is only used with --clips"),
        (["--clips", "{file}"], "is not a folder"),
    ],
)
def test_bad_clip_arguments_exit_2_and_judge_nothing(
    compat_artifact: Path, recordings: list, tmp_path: Path, extra: list[str], message: str
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    args = [x.format(file=a_file) for x in extra]
    done = _replay("--model", str(compat_artifact), *args, str(recordings[0].flac))
    assert done.returncode == 2
    assert message in done.stderr and done.stdout == ""
