"""Defect clips: exact read-back, policy, sidecar, atomic writes, retention, promotion."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from monitor.events import Source, WeldResult, new_weld_id, parse_event
from monitor.ops.clip_policy import BYTES_PER_MB, ClipSettings, StoredClip, plan_retention
from monitor.ops.clips import (
    PCM16_FULL_SCALE,
    ClipError,
    ClipStore,
    clip_audio_path,
    promote_clip,
)
from training.dataset import index_dataset

RATE = 16_000  # Hz, the model rate
SHA = "ab" * 32
DAY_S = 86_400.0


def make_result(
    label: int = 1, station: str = "cell1", probs: list[float] | None = None
) -> WeldResult:
    started = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    probs = [0.2, 0.9, 0.8] if probs is None else probs
    return WeldResult(
        daemon_version="0.1.0",
        model_sha256=SHA,
        station=station,
        weld_id=new_weld_id(station, started),
        source=Source(type="device", name="hw:1"),
        started_at=started,
        ended_at=started + timedelta(seconds=3),
        duration_s=3.0,
        label=label,
        label_name="defect" if label else "good_weld",
        p_defect=0.85 if label else 0.1,
        threshold=0.705,
        n_windows=len(probs),
        window_p_max=max(probs),
        window_probs=probs,
        degraded=False,
        dropped_frames=0,
        end_reason="gate",
    )


def int16_source_audio(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """float32 audio exactly as a 16-bit microphone delivers it (k / 32768)."""
    rng = np.random.default_rng(seed)
    ints = rng.integers(-20_000, 20_000, int(seconds * RATE))
    return (ints / PCM16_FULL_SCALE).astype(np.float32)


def store(tmp_path: Path, **settings: object) -> ClipStore:
    return ClipStore(tmp_path / "state", ClipSettings(**settings))  # type: ignore[arg-type]


def test_clip_of_16_bit_source_audio_reads_back_with_exactly_the_same_samples(tmp_path: Path):
    audio = int16_source_audio()
    path = store(tmp_path).write(make_result(), audio, RATE)
    assert path is not None
    back, rate = sf.read(path, dtype="float32")
    assert rate == RATE
    np.testing.assert_array_equal(back, audio)


def test_clip_of_float_audio_reads_back_within_half_a_16_bit_step(tmp_path: Path):
    audio = np.random.default_rng(1).uniform(-0.9, 0.9, 2 * RATE).astype(np.float32)
    path = store(tmp_path).write(make_result(), audio, RATE)
    back, _ = sf.read(path, dtype="float64")
    error = np.abs(back - audio.astype(np.float64))
    assert error.max() <= 0.5 / PCM16_FULL_SCALE + 1e-12
    assert error.max() > 0  # the bound is reached by real quantisation, not trivially


@pytest.mark.real_data
def test_clip_of_a_real_defect_recording_reads_back_identically(tmp_path: Path, recordings):
    defect = next(r for r in recordings if r.is_defect)
    audio, rate = sf.read(defect.flac, dtype="float32")
    path = store(tmp_path).write(make_result(), audio, rate)
    back, back_rate = sf.read(path, dtype="float32")
    assert back_rate == rate
    np.testing.assert_array_equal(back, audio)


def test_out_of_range_and_non_finite_samples_are_clipped_and_counted(tmp_path: Path):
    clips = store(tmp_path)
    audio = np.array([0.5, 1.5, -2.0, np.nan, np.inf, 0.0] * 100, dtype=np.float32)
    path = clips.write(make_result(), audio, RATE)
    back, _ = sf.read(path, dtype="int16")
    assert back[1] == 32767 and back[2] == -32768  # saturated, not wrapped
    assert back[3] == 0 and back[4] == 0
    assert clips.counters["bad_samples"] == 4 * 100


@pytest.mark.parametrize(
    ("policy", "label", "kept"),
    [
        ("defect", 1, True),
        ("defect", 0, False),
        ("all", 0, True),
        ("all", 1, True),
        ("none", 1, False),
    ],
)
def test_policy_decides_which_welds_are_kept(tmp_path: Path, policy: str, label: int, kept: bool):
    clips = store(tmp_path, policy=policy)
    path = clips.write(make_result(label=label), int16_source_audio(1.0), RATE)
    assert (path is not None) == kept
    assert clips.counters["written" if kept else "skipped_by_policy"] == 1


def test_clip_lands_in_the_documented_layout(tmp_path: Path):
    result = make_result(station="cell-7")
    path = store(tmp_path).write(result, int16_source_audio(1.0), RATE)
    expected = (
        tmp_path / "state/clips/unreviewed/cell-7" / result.weld_id / f"{result.weld_id}.flac"
    )
    assert path == expected
    assert path == clip_audio_path(tmp_path / "state/clips", "cell-7", result.weld_id)


def test_sidecar_holds_the_result_event_with_clip_path_and_the_window_probs(tmp_path: Path):
    result = make_result(probs=[0.1, 0.95])
    path = store(tmp_path).write(result, int16_source_audio(2.0), RATE, [0.1, 0.95])
    sidecar = json.loads(path.with_suffix(".json").read_text())
    event = parse_event(json.dumps(sidecar["result"]).encode())
    assert event == result.model_copy(update={"clip_path": str(path)})
    assert sidecar["window_probs"] == [0.1, 0.95]
    assert sidecar["audio"]["samples"] == 2 * RATE
    assert sidecar["audio"]["sample_rate"] == RATE


def test_write_leaves_no_temporary_folder_and_removes_crash_leftovers(tmp_path: Path):
    clips = store(tmp_path)
    leftover = tmp_path / "state/clips/unreviewed/cell1/.tmp-crashed"
    leftover.mkdir(parents=True)
    (leftover / "half.flac").write_bytes(b"fLaC")
    clips.write(make_result(), int16_source_audio(1.0), RATE)
    hidden = [p.name for p in (tmp_path / "state/clips/unreviewed/cell1").iterdir()]
    assert not [n for n in hidden if n.startswith(".")]
    assert clips.counters["stale_tmp_removed"] == 1


def test_failed_write_raises_clip_error_and_leaves_nothing_behind(tmp_path: Path):
    clips = store(tmp_path)
    with pytest.raises(ClipError, match="1-D"):
        clips.write(make_result(), np.zeros((10, 2), dtype=np.float32), RATE)
    assert not (tmp_path / "state/clips/unreviewed").exists()


def _write_aged(clips: ClipStore, ages_days: list[float]) -> list[Path]:
    """Write one clip per age (days before now), oldest mtime for the largest age."""
    paths = []
    for age in ages_days:
        path = clips.write(make_result(), int16_source_audio(0.5), RATE)
        assert path is not None
        stamp = path.stat().st_mtime - age * DAY_S
        os.utime(path, (stamp, stamp))
        paths.append(path)
    return paths


def test_retention_by_count_deletes_the_oldest_clips_first(tmp_path: Path):
    clips = store(tmp_path, max_count=3)
    old = _write_aged(clips, [5.0, 4.0, 3.0])
    newest = clips.write(make_result(), int16_source_audio(0.5), RATE)
    assert not old[0].exists()
    assert old[1].exists() and old[2].exists() and newest.exists()
    assert clips.counters["deleted_by_count"] == 1


def test_retention_by_age_deletes_clips_older_than_max_age(tmp_path: Path):
    clips = store(tmp_path, max_age_days=10)
    old = _write_aged(clips, [30.0, 20.0, 1.0])
    clips.apply_retention()
    assert [p.exists() for p in old] == [False, False, True]
    assert clips.counters["deleted_by_age"] == 2


def test_retention_by_free_disk_deletes_everything_but_the_clip_just_written(tmp_path: Path):
    clips = store(tmp_path)
    old = _write_aged(clips, [3.0, 2.0])
    free_mb = shutil.disk_usage(tmp_path).free / BYTES_PER_MB
    # A bound this disk cannot meet: retention must empty the tree yet keep the new clip.
    clips.settings = ClipSettings(min_free_mb=free_mb + 1_000_000)
    newest = clips.write(make_result(), int16_source_audio(0.5), RATE)
    assert not old[0].exists() and not old[1].exists()
    assert newest.exists()
    assert clips.counters["deleted_by_disk"] == 2
    assert clips.counters["short_of_free_space"] == 1


def test_disk_retention_stops_once_enough_space_is_free():
    settings = ClipSettings(min_free_mb=10)
    clips = [
        StoredClip(Path(f"/c/{i}"), mtime=float(i), size_bytes=4 * BYTES_PER_MB) for i in range(5)
    ]
    plan = plan_retention(
        clips, settings=settings, now=10.0, free_bytes=3 * BYTES_PER_MB, keep=None
    )
    assert [c.folder.name for c in plan.by_disk] == ["0", "1"]  # 3 + 4 + 4 = 11 MB >= 10 MB
    assert plan.short_of_free_bytes == 0


def test_promoted_clip_is_indexed_by_the_training_dataset_with_the_reviewed_label(
    tmp_path: Path,
):
    result = make_result()
    path = store(tmp_path).write(result, int16_source_audio(2.0), RATE)
    dataset = tmp_path / "dataset"
    promoted = promote_clip(path.parent, dataset, "cell1_2026_03", "07")
    index = index_dataset(dataset)
    assert [e.path for e in index.entries] == [promoted]
    assert index.entries[0].label_name == "lack_of_fusion"
    assert index.entries[0].top_folder == "defect_data_weld"
    assert promoted.with_suffix(".json").is_file()


def test_promotion_refuses_a_label_code_that_is_not_two_digits(tmp_path: Path):
    path = store(tmp_path).write(make_result(), int16_source_audio(1.0), RATE)
    with pytest.raises(ClipError, match="label_code"):
        promote_clip(path.parent, tmp_path / "dataset", "cfg", "defect")


@pytest.mark.parametrize(
    ("key", "value"),
    [("policy", "some"), ("max_count", 0), ("max_age_days", float("nan")), ("extra", 1)],
)
def test_clip_settings_reject_bad_values_naming_the_key(key: str, value: object):
    with pytest.raises(ValidationError, match=key):
        ClipSettings(**{key: value})  # type: ignore[arg-type]
