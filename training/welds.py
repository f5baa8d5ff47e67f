"""Where the welds of a recording are: the boundaries training and evaluation judge.

The daemon judges only the welds its segmenter cuts, so training, its validation, `cv` and
`evaluate`'s weld mode judge the same thing: each weld's audio [start, end), cut into whole
windows aligned at the weld's start (`deploy.windows.cut_windows` on that slice, which is what
the daemon's windower does). The boundaries come from one of:

- ``current``: the arc current in the run's sensor CSV (``<run_id>.csv`` beside the audio),
  moved onto the audio clock by `training.sensorlog.estimate_clock_offset`; the most
  trustworthy source where it exists;
- ``gate``: the daemon's default segmenter over the whole recording;
- ``file``: the whole recording is one weld (the daemon's `file` mode; what `forward` judges).

``auto`` takes ``current`` when the CSV is there and readable, else ``gate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from deploy.errors import WeldmonError
from deploy.segment.factory import default_segmenter
from deploy.segment.levels import frame_rms_db
from deploy.segment.protocol import pair_boundaries
from training.sensorlog import (
    SensorLogError,
    arc_intervals,
    estimate_clock_offset,
    read_sensor_log,
)

SegmentationSource = Literal["auto", "current", "gate", "file"]
SEGMENTATION_SOURCES: tuple[str, ...] = ("auto", "current", "gate", "file")
SENSOR_SUFFIX = ".csv"  # the sensor log beside each run's audio
# Frame of the broadband level envelope the clock offset is estimated on (s); the value the
# segmentation bench uses for its ground truth, so both read the same arc times.
OFFSET_FRAME_S = 0.05


class WeldSegmentationError(WeldmonError):
    """No usable boundaries for a recording (e.g. ``current`` asked for, no sensor log)."""


@dataclass(frozen=True)
class Weld:
    """One weld of a recording: samples [start, end) at the model rate, and who cut it."""

    start: int
    end: int
    source: str  # "current" | "gate" | "file"
    note: str = ""  # why the source is not the one asked for (auto: the sensor log's fault)

    @property
    def n_samples(self) -> int:
        return self.end - self.start


def default_segmenter_welds(mono: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
    """(start, end) of every weld the daemon's default segmenter finds in a whole recording:
    the very segmenter the daemon builds (`deploy.segment.factory`), fed the whole array as one
    block (its boundaries do not depend on the blocking)."""
    segmenter = default_segmenter(sample_rate)
    x = np.ascontiguousarray(mono, dtype=np.float32)
    return pair_boundaries(segmenter.process(x, 0) + segmenter.close(x.size))


def level_envelope_db(mono: np.ndarray, frame_len: int) -> np.ndarray:
    """Broadband level (dBFS) of each whole frame, for the sensor-log clock offset."""
    return frame_rms_db(mono[: mono.size // frame_len * frame_len], frame_len)


def sensor_log_path(audio_path: Path) -> Path:
    """Where a run's sensor CSV lies: beside the audio, same stem."""
    return Path(audio_path).with_suffix(SENSOR_SUFFIX)


def current_welds(csv_path: Path, mono: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
    """Arc-on intervals of the sensor log as (start, end) samples on the audio's clock,
    clipped to the recording; raises SensorLogError when the log cannot be used."""
    log = read_sensor_log(csv_path)
    frame_len = round(OFFSET_FRAME_S * sample_rate)
    offset = estimate_clock_offset(log, level_envelope_db(mono, frame_len), frame_len / sample_rate)
    welds = []
    for a, b in arc_intervals(log):
        start = max(0, round((a + offset) * sample_rate))
        end = min(mono.size, round((b + offset) * sample_rate))
        if end > start:
            welds.append((start, end))
    return welds


def find_welds(
    audio_path: Path, mono: np.ndarray, sample_rate: int, source: SegmentationSource = "auto"
) -> list[Weld]:
    """The welds of one decoded recording (mono float32 at `sample_rate`), from `source`."""
    if source not in SEGMENTATION_SOURCES:
        raise WeldSegmentationError(f"unknown segmentation {source!r} ({SEGMENTATION_SOURCES})")
    if source == "file":
        return [Weld(0, int(mono.size), "file")]
    csv_path = sensor_log_path(audio_path)
    if source == "current" or (source == "auto" and csv_path.is_file()):
        try:
            return [Weld(a, b, "current") for a, b in current_welds(csv_path, mono, sample_rate)]
        except SensorLogError as exc:
            if source == "current":
                raise WeldSegmentationError(f"{audio_path}: {exc}") from exc
            # auto: a broken log must not hide the recording; the gate judges it instead,
            # and every weld says why.
            note = f"sensor log unusable ({exc}); gate used"
            return [Weld(a, b, "gate", note) for a, b in default_segmenter_welds(mono, sample_rate)]
    return [Weld(a, b, "gate") for a, b in default_segmenter_welds(mono, sample_rate)]
