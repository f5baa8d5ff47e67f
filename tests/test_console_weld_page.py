"""The weld page's parts without a browser: the process record as a table with units, the
window scores from the clip's sidecar when the result has none, and the spectrogram drawn
with the window scores on its time axis (real clips written by the daemon's clip store)."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monitor.console.clipfiles import sidecar_window_probs
from monitor.console.spectrogram import WindowScores, spectrogram_png
from monitor.console.thumbnail import THUMB_PX
from monitor.console.views import process_rows, verdict_quality, window_chart
from monitor.events import DropoutSummary, ProcessRecord, Source, WeldResult, new_weld_id
from monitor.ops.clip_policy import ClipsConfig
from monitor.ops.clips import ClipStore

SHA = "9fa888fd5505fb57c8c10ffe5d76129779659e3bff0531a420d717f81f9bc83f"
T0 = datetime(2026, 3, 2, 9, 15, 4, 250000, tzinfo=UTC)
RATE = 16_000
PROBS = [0.2, 0.9, 0.8]


def _result(**extra: object) -> WeldResult:
    fields: dict[str, object] = {
        "daemon_version": "0.1.0",
        "model_sha256": SHA,
        "station": "cell1",
        "weld_id": new_weld_id("cell1", T0),
        "source": Source(type="device", name="mic"),
        "started_at": T0,
        "ended_at": T0 + timedelta(seconds=3),
        "duration_s": 3.0,
        "label": 1,
        "label_name": "defect",
        "p_defect": 0.9,
        "threshold": 0.705,
        "n_windows": 3,
        "window_p_max": 0.9,
        "degraded": False,
        "dropped_frames": 0,
        "end_reason": "gate",
    }
    return WeldResult.model_validate(fields | extra)


def _clip(tmp_path: Path, r: WeldResult) -> Path:
    tone = 0.1 * np.sin(np.arange(3 * RATE) * 2 * np.pi * 440 / RATE)
    path = ClipStore(tmp_path, ClipsConfig(policy="all")).write(r, tone, RATE, PROBS)
    assert path is not None
    return path


def test_the_process_record_reads_as_quantities_with_units_at_sensor_precision() -> None:
    record = ProcessRecord(
        samples=412,
        arc_s=20.549999999999997,
        current_mean_a=182.34567890123456,
        current_std_a=4.612345678901234,
        voltage_mean_v=21.98765432109876,
        voltage_std_v=None,
        energy_kj=82.41234567890123,
        wire_consumed_m=None,
        dropouts=DropoutSummary(count=2, longest_s=0.1234567, total_s=0.2)
    )  # fmt: skip
    rows = dict(process_rows(_result(process=record)))
    assert rows["arc time"] == "20.5 s"
    assert rows["current (mean ± sd, arc burning)"] == "182.3 ± 4.6 A"
    assert rows["voltage (mean ± sd, arc burning)"] == "22.0 V"
    assert rows["arc energy"] == "82.41 kJ"
    assert rows["wire consumed"] == "not reported"
    assert rows["current dropouts"] == "2 (longest 0.12 s, 0.20 s in all)"
    assert process_rows(_result()) == []
    # Without the lead's margin/confidence fields (older daemons) nothing is made up.
    assert verdict_quality(_result()) == (None, None)


def test_window_scores_come_from_the_clips_sidecar_when_the_result_has_none(
    tmp_path: Path,
) -> None:
    r = _result()  # events.window_probs off: the result carries none
    audio = _clip(tmp_path, r)
    assert window_chart(r, None) is None
    probs = sidecar_window_probs(audio)
    assert probs == PROBS
    chart = window_chart(r, None, probs)
    assert chart is not None and [b.over for b in chart.bars] == [False, True, True]
    audio.with_suffix(".json").write_text("{not json")
    assert sidecar_window_probs(audio) is None


@pytest.mark.parametrize("scored", [False, True])
def test_the_spectrogram_carries_the_window_scores_on_its_time_axis(
    tmp_path: Path, scored: bool
) -> None:
    audio = _clip(tmp_path, _result())
    scores = WindowScores(tuple(PROBS), 1.0, 0.705) if scored else None
    image = Image.open(io.BytesIO(spectrogram_png(audio, scores)))
    # 9 x 3 in at 100 dpi alone; the scores add a panel above on the same x axis
    assert image.size == ((900, 420) if scored else (900, 300))


def test_the_thumbnail_is_small_and_needs_no_matplotlib(tmp_path: Path) -> None:
    audio = _clip(tmp_path, _result())
    code = (
        "import sys; from pathlib import Path; from monitor.console.thumbnail import thumbnail_png;"
        f"png = thumbnail_png(Path({str(audio)!r})); sys.stdout.buffer.write(png);"
        "assert 'matplotlib' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-1000:]
    assert Image.open(io.BytesIO(done.stdout)).size == THUMB_PX
