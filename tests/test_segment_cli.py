"""`weldmon segment` (and `weldmon replay --plot`): each real recording's welds beside its arc
current, the figure, and the errors and exit codes of bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deploy.segment.crackle import CrackleSegmenter
from deploy.segment.crackle_params import CrackleParams
from deploy.segment.gate import GateParams, GateSegmenter
from deploy.segment.offline import segment_welds
from tests.support.arc_truth import RATE_HZ, recording_with_truth
from tests.support.data import Recording

TOL_S = 0.5  # the crackle segmenter's acceptance criterion on the shared recordings
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAMP = "%m/%d/%Y %H:%M:%S.%f"


def _weldmon(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one(recordings: list[Recording], k: int = 0) -> Recording:
    return sorted(recordings, key=lambda r: r.run_id)[k]


@pytest.mark.real_data
def test_json_lines_give_each_weld_beside_its_arc_current(recordings: list[Recording]) -> None:
    rec = _one(recordings)
    done = _weldmon("segment", "--json", str(rec.flac))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    _, truth = recording_with_truth(rec)
    assert len(lines) == 1
    weld = lines[0]
    assert weld["file"] == str(rec.flac) and weld["mode"] == "crackle" and weld["weld"] == 1
    # The current's span is the sensor log's arc on the audio clock (the ground truth's rule).
    assert weld["current_start_s"] == pytest.approx(truth.start_s, abs=0.01)
    assert weld["current_end_s"] == pytest.approx(truth.end_s, abs=0.01)
    assert weld["start_error_s"] == pytest.approx(weld["start_s"] - truth.start_s, abs=0.01)
    assert weld["end_error_s"] == pytest.approx(weld["end_s"] - truth.end_s, abs=0.01)
    assert abs(weld["start_error_s"]) <= TOL_S and abs(weld["end_error_s"]) <= TOL_S
    assert weld["length_s"] == pytest.approx(weld["end_s"] - weld["start_s"], abs=0.002)


@pytest.mark.real_data
def test_table_follows_the_configs_mode_and_names_a_file_without_a_log(
    recordings: list[Recording], tmp_path: Path
) -> None:
    rec = _one(recordings, 1)
    alone = tmp_path / "alone.flac"
    shutil.copy(rec.flac, alone)  # no sensor log beside it
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"model: {{path: {tmp_path / 'm.onnx'}}}\nstate_dir: {tmp_path}\n"
        "segmentation: {mode: gate}\n"
    )
    done = _weldmon("segment", "--config", str(config), str(rec.flac), str(alone))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"{rec.flac}  (gate," in out and "err.start" in out
    assert f"{alone}  (gate," in out and "no arc current: no alone.csv beside it" in out


@pytest.mark.real_data
def test_plot_draws_one_png_per_file_with_the_current(
    recordings: list[Recording], tmp_path: Path
) -> None:
    recs = [_one(recordings, 0), _one(recordings, 2)]
    for mode in ("crackle", "gate", "current"):
        out = tmp_path / mode
        done = _weldmon("segment", "--mode", mode, "--plot", str(out), *(str(r.flac) for r in recs))
        assert done.returncode == 0, done.stderr
        for rec in recs:
            png = out / f"{rec.flac.stem}.png"
            assert png.read_bytes()[:8] == PNG_MAGIC
            assert f"figure {png}" in done.stderr
    single = tmp_path / "one.png"
    done = _weldmon("segment", "--plot", str(single), str(recs[0].flac))
    assert done.returncode == 0, done.stderr
    assert single.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.real_data
def test_replay_plot_draws_the_figure_of_each_replayed_file(
    recordings: list[Recording], compat_artifact: Path, tmp_path: Path
) -> None:
    rec = _one(recordings)
    out = tmp_path / "figs"
    done = _weldmon(
        "replay",
        "--model",
        str(compat_artifact),
        "--no-progress",
        "--plot",
        str(out),
        str(rec.flac),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["kind"] == "weld_result"
    assert (out / f"{rec.flac.stem}.png").read_bytes()[:8] == PNG_MAGIC
    # One weld per file cuts no figure: said before anything runs.
    done = _weldmon(
        "replay",
        "--model",
        str(compat_artifact),
        "--segmentation",
        "file",
        "--plot",
        str(out),
        str(rec.flac),
    )
    assert done.returncode == 2 and "'file' cuts no recording by itself" in done.stderr
    assert done.stdout == ""


@pytest.mark.real_data
def test_a_bad_file_fails_alone_with_exit_1(recordings: list[Recording], tmp_path: Path) -> None:
    rec = _one(recordings)
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio at all")
    alone = tmp_path / "alone.flac"
    shutil.copy(rec.flac, alone)
    done = _weldmon("segment", "--json", str(broken), str(rec.flac))
    assert done.returncode == 1
    assert "weldmon segment:" in done.stderr and str(broken) in done.stderr
    assert [json.loads(line)["file"] for line in done.stdout.splitlines()] == [str(rec.flac)]
    done = _weldmon("segment", "--mode", "current", str(alone))
    assert done.returncode == 1
    assert "current mode needs the run's sensor log" in done.stderr
    (tmp_path / "empty").mkdir()
    done = _weldmon("segment", str(tmp_path / "empty"))
    assert done.returncode == 1 and "a folder with no audio files" in done.stderr


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16_000, dtype=np.float32), 16_000)
    other = tmp_path / "b.wav"
    shutil.copy(wav, other)
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"model: {{path: {tmp_path / 'm.onnx'}}}\nstate_dir: {tmp_path}\n"
        "segmentation: {mode: trigger}\n"
    )
    cases = {
        ("segment", "--mode", "trigger", str(wav)): "invalid choice",
        ("segment", "--plot", str(tmp_path / "x.png"), str(wav), str(other)): "need a folder",
        ("segment", "--config", str(config), str(wav)): "'trigger' cuts no recording",
        ("segment", "--config", str(tmp_path / "none.yaml"), str(wav)): "none.yaml",
    }
    for args, message in cases.items():
        done = _weldmon(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert done.stdout == ""


def test_plot_without_matplotlib_names_the_extra_and_exits_2(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16_000, dtype=np.float32), 16_000)
    hide = (
        "import sys; sys.modules['matplotlib'] = None; from weldmon.cli import main; "
        f"sys.exit(main(['segment', '--plot', {str(tmp_path / 'f')!r}, {str(wav)!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "pip install 'weldmon[console]'" in done.stderr
    assert not (tmp_path / "f").exists()


@pytest.mark.real_data
def test_the_trace_hook_changes_no_boundary(recordings: list[Recording]) -> None:
    samples, _ = recording_with_truth(_one(recordings, 3))
    for build in (
        lambda: CrackleSegmenter(CrackleParams(), RATE_HZ),
        lambda: GateSegmenter(GateParams(), RATE_HZ),
    ):
        plain = segment_welds(samples, RATE_HZ, build())
        traced = build()
        traced.trace = []
        assert segment_welds(samples, RATE_HZ, traced) == plain
        starts = [t[0] for t in traced.trace]
        assert starts == sorted(starts) and len(starts) >= samples.size // 800 - 1


def _logs_back_to_back(first: Path, second: Path, out: Path) -> None:
    """``first``'s rows, then ``second``'s moved in time to follow them."""
    rows = []
    for log in (first, second):
        with log.open(newline="", encoding="utf-8-sig") as fh:
            read = list(csv.reader(fh))
        body = [r for r in read[1:] if any(c.strip() for c in r)]
        rows.append((read[0], body))
    header, body = rows[0]
    names = [h.strip() for h in header]
    di, ti = names.index("Date"), names.index("Time")

    def at(row: list[str]) -> datetime:
        return datetime.strptime(f"{row[di]} {row[ti]}", STAMP)

    shift = at(body[-1]) + timedelta(seconds=0.1) - at(rows[1][1][0])
    for row in rows[1][1]:
        moved = list(row)
        t = at(row) + shift
        moved[di], moved[ti] = t.strftime("%m/%d/%Y"), t.strftime("%H:%M:%S.%f")[:-3]
        body.append(moved)
    with out.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *body])


@pytest.mark.real_data
def test_an_arc_the_audio_did_not_cut_is_listed_as_missed(
    recordings: list[Recording], tmp_path: Path
) -> None:
    """The current burns a second weld where the file holds only the room's idle (the
    microphone heard nothing of it): the table and the JSON name the missed arc."""
    first, second = _one(recordings, 0), _one(recordings, 1)
    a, truth = recording_with_truth(first)
    b, _ = recording_with_truth(second)
    idle = np.tile(a[: round((truth.start_s - 1.0) * RATE_HZ)], 20)[: b.size]
    both = tmp_path / "heard_once.flac"
    sf.write(both, np.concatenate((a, idle)), RATE_HZ)
    _logs_back_to_back(first.sensor_csv, second.sensor_csv, both.with_suffix(".csv"))
    done = _weldmon("segment", "--json", str(both))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["weld"] for r in lines] == [1, None]
    assert abs(lines[0]["end_error_s"]) <= TOL_S
    missed = lines[1]
    assert missed["current_start_s"] > lines[0]["end_s"] and "start_s" not in missed
    done = _weldmon("segment", str(both))
    assert done.returncode == 0, done.stderr
    assert f"missed: arc current {missed['current_start_s']:.2f}-" in done.stdout
