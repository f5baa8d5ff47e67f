"""A factory floor made from the real recordings, for the segmentation bench and tests: the
cases (``FloorCase``) built from the generators of ``deploy.segment.floor`` (noise, a
neighbouring cell, bursts, hum, gain, a fading tail, a soft strike; re-exported here) and the
capture at another rate.

- ``through_capture_rate``: the recording as captured at 44.1 or 48 kHz and brought back to
  the model rate by the monitor's own streaming resampler, in 0.1 s blocks.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import soxr

from deploy.segment.floor import (
    ARC_BAND_HZ,
    FAN_BLADE_PASS_HZ,
    GRINDER_ROTATION_HZ,
    MAINS_HZ,
    PINK_LOW_HZ,
    WHINE_HZ,
    arc_band_level_db,
    attenuated,
    gained,
    grinder_bursts,
    hum_and_fan,
    impact_bursts,
    padded_with_idle,
    pink_noise,
    ramped_in,
    whine,
    white_noise,
    with_neighbour,
)
from monitor.pipeline.resample import StationResampler

__all__ = [
    "ARC_BAND_HZ",
    "FAN_BLADE_PASS_HZ",
    "GRINDER_ROTATION_HZ",
    "MAINS_HZ",
    "PINK_LOW_HZ",
    "WHINE_HZ",
    "ArcRecording",
    "CaseAudio",
    "FloorCase",
    "arc_band_level_db",
    "attenuated",
    "build_case",
    "case_rng",
    "gained",
    "grinder_bursts",
    "hum_and_fan",
    "impact_bursts",
    "padded_with_idle",
    "pink_noise",
    "ramped_in",
    "through_capture_rate",
    "whine",
    "white_noise",
    "with_neighbour",
]

CAPTURE_BLOCK_S = 0.1  # the daemon's audio.block_s


def through_capture_rate(x: np.ndarray, rate: int, capture_rate: int) -> np.ndarray:
    """``x`` as a device at ``capture_rate`` would deliver it (resampled up with soxr, whole),
    then back through the monitor's streaming ``StationResampler`` in ``CAPTURE_BLOCK_S``
    blocks, as the daemon does. The result has ``x``'s rate and its sample clock."""
    captured = soxr.resample(x, rate, capture_rate).astype(np.float32)
    resampler = StationResampler(capture_rate, rate)
    block = round(CAPTURE_BLOCK_S * capture_rate)
    parts = [
        resampler.process(captured[pos : pos + block], pos, epoch=0).samples
        for pos in range(0, captured.size, block)
    ]
    parts.append(resampler.flush().samples)
    return np.concatenate(parts).astype(np.float32)


# -- cases: one recording (and what is mixed into it) as the bench and tests hear it ----------

NEIGHBOUR_PAD_S = 8.0  # own idle added before and after a recording that gets a neighbour
NEIGHBOUR_SHIFT_S = (2.0, 6.0)  # the neighbour's arc starts this much before or after ours
IDLE_MARGIN_S = 1.5  # a recording's idle head ends this long before its arc


@dataclass(frozen=True)
class FloorCase:
    """One factory-floor condition. ``kind`` is one of: as_recorded, gain (dB), white, pink,
    hum_fan, whine, grinder (dBFS), impacts (peak dBFS), neighbour (dB relative to the
    target's arc; ``warm``: the station welded once before), rate (capture rate, Hz)."""

    name: str
    kind: str
    value: float = 0.0
    warm: bool = False


@dataclass(frozen=True)
class ArcRecording:
    """A recording at the model rate and its arc (s from its start)."""

    run_id: str
    samples: np.ndarray
    arc_s: tuple[float, float]


@dataclass(frozen=True)
class CaseAudio:
    """A case's signal and where the target's arc lies in it; only welds that end after
    ``scored_after_s`` are scored (earlier ones belong to the station's previous weld)."""

    samples: np.ndarray
    arc_s: tuple[float, float]
    scored_after_s: float = 0.0


def case_rng(seed: int, run_id: str, case: FloorCase) -> np.random.Generator:
    """The generator for one recording in one case (the same numbers on every run)."""
    return np.random.default_rng(
        [seed, zlib.crc32(run_id.encode()), zlib.crc32(case.name.encode())]
    )


def build_case(
    case: FloorCase,
    target: ArcRecording,
    rate: int,
    seed: int,
    neighbour: ArcRecording | None = None,
    previous: ArcRecording | None = None,
) -> CaseAudio:
    """``target`` under ``case``; a neighbour case needs ``neighbour`` (another setup's
    recording), a warm one also ``previous`` (another weld of the target's own setup)."""
    x, n = target.samples, target.samples.size
    rng = case_rng(seed, target.run_id, case)
    kind, v = case.kind, case.value
    if kind == "as_recorded":
        return CaseAudio(x, target.arc_s)
    if kind == "gain":
        return CaseAudio(gained(x, v), target.arc_s)
    if kind == "rate":
        return CaseAudio(through_capture_rate(x, rate, int(v)), target.arc_s)
    added = {
        "white": lambda: white_noise(n, v, rng),
        "pink": lambda: pink_noise(n, rate, v, rng),
        "hum_fan": lambda: hum_and_fan(n, rate, v, rng),
        "whine": lambda: whine(n, rate, v, rng),
        "grinder": lambda: grinder_bursts(n, rate, v, rng),
        "impacts": lambda: impact_bursts(n, rate, v, rng),
    }
    if kind in added:
        return CaseAudio((x + added[kind]()).astype(np.float32), target.arc_s)
    if kind != "neighbour":
        raise ValueError(f"unknown case kind {kind!r}")
    if neighbour is None or (case.warm and previous is None):
        raise ValueError(f"case {case.name!r} needs a neighbour (and previous) recording")
    pad = NEIGHBOUR_PAD_S
    own = padded_with_idle(x, rate, target.arc_s[0] - IDLE_MARGIN_S, pad)
    other = padded_with_idle(neighbour.samples, rate, neighbour.arc_s[0] - IDLE_MARGIN_S, pad)
    shift = rng.choice((-1.0, 1.0)) * rng.uniform(*NEIGHBOUR_SHIFT_S)
    mixed = with_neighbour(
        own,
        other,
        rate,
        v,
        target.arc_s[0] - neighbour.arc_s[0] + shift,
        arc_band_level_db(x, rate, target.arc_s),
        arc_band_level_db(neighbour.samples, rate, neighbour.arc_s),
    )
    arc = (target.arc_s[0] + pad, target.arc_s[1] + pad)
    if not case.warm:
        return CaseAudio(mixed, arc)
    assert previous is not None
    lead = previous.samples.size / rate
    return CaseAudio(
        np.concatenate((previous.samples, mixed)), (arc[0] + lead, arc[1] + lead), lead
    )
