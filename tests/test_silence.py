"""SilenceWatch: dead-microphone episodes from runs of exact zeros (pure, synthetic blocks)."""

from __future__ import annotations

import numpy as np

from monitor.audio.silence import SilenceWatch

RATE_HZ = 1_000  # small rate: a 1 s alarm is 1000 frames
BLOCK = 100
RNG = np.random.default_rng(11)


def _noise(frames: int, channels: int) -> np.ndarray:
    # Never exactly zero: offset away from 0.
    return (RNG.uniform(0.001, 0.01, (frames, channels))).astype(np.float32)


def _feed(watch: SilenceWatch, block: np.ndarray, times: int) -> list:
    changes = []
    for _ in range(times):
        changes += watch.update(block, RATE_HZ)
    return changes


def test_channels_that_keep_sounding_raise_nothing() -> None:
    watch = SilenceWatch(alarm_s=1.0)
    assert _feed(watch, _noise(BLOCK, 4), 30) == []
    assert watch.alarmed_channels() == []


def test_a_channel_silent_for_alarm_s_raises_one_alarm_naming_it() -> None:
    watch = SilenceWatch(alarm_s=1.0)
    block = _noise(BLOCK, 3)
    block[:, 1] = 0.0
    changes = _feed(watch, block, 25)
    assert [(c.channel, c.change) for c in changes] == [(1, "alarm")]
    assert changes[0].silent_s == 1.0
    assert watch.alarmed_channels() == [1]
    assert watch.episodes == 1


def test_sound_ending_in_zeros_counts_only_the_trailing_zeros() -> None:
    watch = SilenceWatch(alarm_s=1.0)
    tail = _noise(BLOCK, 2)
    tail[40:, 0] = 0.0  # 60 trailing zeros on channel 0
    silent = np.zeros((BLOCK, 2), np.float32)
    silent[:, 1] = 0.005
    watch.update(tail, RATE_HZ)
    # 60 + 9 * 100 = 960 frames: not yet; the 10th silent block crosses 1000.
    assert _feed(watch, silent, 9) == []
    changes = _feed(watch, silent, 1)
    assert [(c.channel, c.change, c.silent_s) for c in changes] == [(0, "alarm", 1.06)]


def test_zeros_inside_a_block_that_ends_in_sound_reset_the_run() -> None:
    watch = SilenceWatch(alarm_s=1.0)
    silent = np.zeros((BLOCK, 1), np.float32)
    _feed(watch, silent, 9)
    block = np.zeros((BLOCK, 1), np.float32)
    block[-1, 0] = 0.01  # only the last sample sounds
    watch.update(block, RATE_HZ)
    assert _feed(watch, silent, 9) == []  # the run restarted at 0


def test_the_first_sound_after_an_alarm_clears_it_once() -> None:
    watch = SilenceWatch(alarm_s=1.0)
    _feed(watch, np.zeros((BLOCK, 2), np.float32), 10)
    assert watch.alarmed_channels() == [0, 1]
    back = np.zeros((BLOCK, 2), np.float32)
    back[10, 0] = 0.02  # channel 0 sounds once, mid-block, then zeros again
    changes = watch.update(back, RATE_HZ)
    assert [(c.channel, c.change, c.silent_s) for c in changes] == [(0, "cleared", 1.0)]
    assert watch.alarmed_channels() == [1]


def test_a_new_epoch_restarts_the_count() -> None:
    watch = SilenceWatch(alarm_s=1.0)
    silent = np.zeros((BLOCK, 1), np.float32)
    _feed(watch, silent, 9)
    watch.reset()
    assert _feed(watch, silent, 9) == []


def test_no_alarm_when_switched_off() -> None:
    watch = SilenceWatch(alarm_s=None)
    assert _feed(watch, np.zeros((BLOCK, 2), np.float32), 100) == []
