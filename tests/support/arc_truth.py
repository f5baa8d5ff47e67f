"""Ground truth for segmentation: each real recording's arc from its sensor log.

The arc is the primary weld current above 5 A (first to last row, dropouts under 1 s
bridged). The log's clock is moved onto the audio's by the offset that best lines the log's
arc mask up with the recording's *broadband* level envelope (``estimate_clock_offset``): no
segmenter, no threshold and another band than the segmenters listen to, and one number
shifts start and end alike, so it cannot absorb a segmenter's errors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from deploy.audio import read_recording
from deploy.sensorlog import arc_intervals, audio_clock_offset, read_sensor_log
from tests.support.data import Recording

RATE_HZ = 16_000
OFFSET_FRAME_S = 0.05  # envelope frame for the clock offset: twice the log's resolution


@dataclass(frozen=True)
class ArcTruth:
    """One recording's arc on the audio clock (s from the file's start)."""

    run_id: str
    config_folder: str
    offset_s: float  # audio time = log time + offset
    start_s: float
    end_s: float


def read_mono(rec: Recording, rate: int = RATE_HZ) -> np.ndarray:
    """The recording as float32 mono at ``rate``."""
    return read_recording(rec.flac, rate).samples.mean(axis=0).astype(np.float32)


def arc_truth_of(rec: Recording, samples: np.ndarray, rate: int = RATE_HZ) -> ArcTruth:
    """The arc of ``rec`` (whose audio is ``samples`` at ``rate``) from its sensor log."""
    log = read_sensor_log(rec.sensor_csv)
    offset = audio_clock_offset(log, samples, rate)
    arcs = arc_intervals(log)
    return ArcTruth(
        rec.run_id, rec.config_folder, offset, arcs[0][0] + offset, arcs[-1][1] + offset
    )


@functools.cache
def _cached(rec: Recording) -> tuple[np.ndarray, ArcTruth]:
    samples = read_mono(rec)
    return samples, arc_truth_of(rec, samples)


def recording_with_truth(rec: Recording) -> tuple[np.ndarray, ArcTruth]:
    """The recording at the model rate and its arc (cached for the session; the array is
    shared, never modify it)."""
    return _cached(rec)
