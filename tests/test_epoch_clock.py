"""FrameZeroClock: frame 0's UTC from callback timing (pure; simulated callbacks)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from monitor.audio.epoch_clock import FrameZeroClock

RATE_HZ = 48_000
BLOCK = 2_400  # 50 ms callbacks
TRUE_ZERO_UTC = 1_700_000_000.0


def _callbacks(delays_s: list[float]) -> list[tuple[float, int]]:
    """(wall time, frames delivered) of callbacks that each run `delay` after their block's
    last frame became available."""
    marks = []
    for k, delay in enumerate(delays_s, start=1):
        frames = k * BLOCK
        marks.append((TRUE_ZERO_UTC + frames / RATE_HZ + delay, frames))
    return marks


def test_estimate_is_none_before_any_callback() -> None:
    assert FrameZeroClock(RATE_HZ).utc is None


def test_estimate_equals_the_true_time_once_one_callback_arrives_promptly() -> None:
    clock = FrameZeroClock(RATE_HZ)
    for wall, frames in _callbacks([0.3, 0.12, 0.25, 0.0, 0.08, 0.4]):
        clock.observe(wall, frames)
    assert clock.utc == pytest.approx(TRUE_ZERO_UTC, abs=1e-6)


def test_estimate_is_never_earlier_than_the_true_time_and_only_moves_earlier() -> None:
    rng = np.random.default_rng(3)
    clock = FrameZeroClock(RATE_HZ)
    seen = []
    for wall, frames in _callbacks(list(rng.uniform(0.005, 0.7, size=100))):
        clock.observe(wall, frames)
        seen.append(clock.utc)
    assert all(u >= TRUE_ZERO_UTC for u in seen)
    assert all(b <= a for a, b in itertools.pairwise(seen))
    assert seen[-1] - TRUE_ZERO_UTC < 0.01  # jitter down to 5 ms: within ~5 ms of the truth


def test_a_late_first_callback_is_corrected_by_later_prompt_ones() -> None:
    clock = FrameZeroClock(RATE_HZ)
    marks = _callbacks([0.7, 0.002])
    clock.observe(*marks[0])
    assert clock.utc == pytest.approx(TRUE_ZERO_UTC + 0.7)
    clock.observe(*marks[1])
    assert clock.utc == pytest.approx(TRUE_ZERO_UTC + 0.002)


def test_estimate_is_frozen_after_the_refinement_span() -> None:
    clock = FrameZeroClock(RATE_HZ, refine_s=1.0)  # 20 callbacks of 50 ms
    marks = _callbacks([0.2] * 20 + [0.0])
    for wall, frames in marks[:20]:
        clock.observe(wall, frames)
    assert clock.settled
    clock.observe(*marks[20])  # a prompt callback after the span no longer counts
    assert clock.utc == pytest.approx(TRUE_ZERO_UTC + 0.2)


def test_estimate_is_not_settled_inside_the_refinement_span() -> None:
    clock = FrameZeroClock(RATE_HZ, refine_s=1.0)
    for wall, frames in _callbacks([0.1] * 19):
        clock.observe(wall, frames)
    assert not clock.settled


@pytest.mark.parametrize(("rate", "refine_s"), [(0, 1.0), (-48_000, 1.0), (RATE_HZ, -1.0)])
def test_clock_rejects_impossible_settings(rate: int, refine_s: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        FrameZeroClock(rate, refine_s)
