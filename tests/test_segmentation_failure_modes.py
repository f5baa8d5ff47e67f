"""The field report's failure modes of audio segmentation (issue 20), made from the shared
recordings, against each run's arc current (its sensor log):

- a fading tail: the arc's last 5 s sound 12 dB quieter while the current runs on;
- a neighbour: another setup's weld, 12 dB under ours, starts in the middle of our weld and
  outlasts it;
- a soft strike: the arc's first second rises from -20 dB.

The default (crackle) segmenter and the learned arc segmenter must place the weld's end
(start, for the strike) within 0.5 s of the arc current's on every recording; one recording
per setup keeps it quick. Where one does not yet, its case is a strict xfail whose reason
records the measured errors. The arc segmenter runs its shipped model, which was trained on
these very recordings (with augmentations of these kinds): its passes here are tuned-on
figures; bench/segmentation_loso.py gives the held-out ones.
"""

from __future__ import annotations

import numpy as np
import pytest

from deploy.segment.factory import audio_only_segmenter
from deploy.segment.modes import SegmentationMode
from deploy.segment.offline import segment_recording
from tests.support.arc_truth import RATE_HZ, recording_with_truth
from tests.support.data import Recording
from tests.support.factory_floor import (
    IDLE_MARGIN_S,
    arc_band_level_db,
    attenuated,
    padded_with_idle,
    ramped_in,
    with_neighbour,
)

TOL_S = 0.5
TAIL_S, TAIL_DB = 5.0, 12.0
NEIGHBOUR_DB = -12.0
NEIGHBOUR_OUTLASTS_S = 3.0  # the neighbour's arc goes on at least this long after ours
STRIKE_S, STRIKE_DB = 1.0, -20.0
PAD_S = 8.0


def one_per_setup(recordings: list[Recording]) -> list[Recording]:
    """The first recording (by run id) of each setup."""
    first: dict[str, Recording] = {}
    for rec in sorted(recordings, key=lambda r: r.run_id):
        first.setdefault(rec.config_folder, rec)
    return [first[k] for k in sorted(first)]


def welds_s(samples: np.ndarray, mode: SegmentationMode) -> list[tuple[float, float]]:
    seg = audio_only_segmenter(mode, RATE_HZ)
    return [(a / RATE_HZ, b / RATE_HZ) for a, b in segment_recording(samples, RATE_HZ, seg)]


def overlapping(
    welds: list[tuple[float, float]], arc: tuple[float, float]
) -> list[tuple[float, float]]:
    return [w for w in welds if min(w[1], arc[1]) > max(w[0], arc[0])]


def _fading_tail_errors(recordings: list[Recording], mode: SegmentationMode) -> list[str]:
    out = []
    for rec in one_per_setup(recordings):
        samples, truth = recording_with_truth(rec)
        x = attenuated(samples, RATE_HZ, (truth.end_s - TAIL_S, truth.end_s + 0.5), TAIL_DB)
        found = overlapping(welds_s(x, mode), (truth.start_s, truth.end_s))
        if len(found) != 1 or abs(found[0][1] - truth.end_s) > TOL_S:
            out.append(f"{rec.run_id}: {found} vs arc end {truth.end_s:.2f}")
    return out


def _neighbour_errors(recordings: list[Recording], mode: SegmentationMode) -> list[str]:
    setups = one_per_setup(recordings)
    arcs = {r.run_id: recording_with_truth(r) for r in setups}
    out = []
    for k, rec in enumerate(setups):
        samples, truth = arcs[rec.run_id]
        mid = (truth.start_s + truth.end_s) / 2.0
        # The next setup (cyclic) whose arc is long enough to outlast ours from its middle.
        others = setups[k + 1 :] + setups[:k]
        nb = next(
            o
            for o in others
            if arcs[o.run_id][1].end_s - arcs[o.run_id][1].start_s
            > truth.end_s - mid + NEIGHBOUR_OUTLASTS_S
        )
        nb_samples, nb_truth = arcs[nb.run_id]
        own = padded_with_idle(samples, RATE_HZ, truth.start_s - IDLE_MARGIN_S, PAD_S)
        other = padded_with_idle(nb_samples, RATE_HZ, nb_truth.start_s - IDLE_MARGIN_S, PAD_S)
        mixed = with_neighbour(
            own,
            other,
            RATE_HZ,
            NEIGHBOUR_DB,
            mid - nb_truth.start_s,  # its arc starts in the middle of ours
            arc_band_level_db(samples, RATE_HZ, (truth.start_s, truth.end_s)),
            arc_band_level_db(nb_samples, RATE_HZ, (nb_truth.start_s, nb_truth.end_s)),
        )
        arc = (truth.start_s + PAD_S, truth.end_s + PAD_S)
        found = overlapping(welds_s(mixed, mode), arc)
        if (
            len(found) != 1
            or abs(found[0][0] - arc[0]) > TOL_S
            or abs(found[0][1] - arc[1]) > TOL_S
        ):
            out.append(f"{rec.run_id} + {nb.run_id}: {found} vs arc {arc[0]:.2f}-{arc[1]:.2f}")
    return out


def _soft_strike_errors(recordings: list[Recording], mode: SegmentationMode) -> list[str]:
    out = []
    for rec in one_per_setup(recordings):
        samples, truth = recording_with_truth(rec)
        x = ramped_in(samples, RATE_HZ, truth.start_s, STRIKE_S, STRIKE_DB)
        found = overlapping(welds_s(x, mode), (truth.start_s, truth.end_s))
        if len(found) != 1 or abs(found[0][0] - truth.start_s) > TOL_S:
            out.append(f"{rec.run_id}: {found} vs arc start {truth.start_s:.2f}")
    return out


CRACKLE, ARC = SegmentationMode.CRACKLE, SegmentationMode.ARC


def _xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


@pytest.mark.real_data
@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(
            CRACKLE,
            marks=_xfail(
                "issue 20: the crackle segmenter ends the weld where the arc turns 12 dB quieter: "
                "8 of 9 setups end 4.89-5.10 s before the current (measured 2026-12-07)"
            ),
        ),
        pytest.param(
            ARC,
            marks=_xfail(
                "issue 20: the arc segmenter holds the quieter tail in 7 of 9 setups; 2 end "
                "2.92 and 3.47 s before the current (measured 2026-12-07)"
            ),
        ),
    ],
)
def test_a_fading_tail_while_the_current_runs_on_ends_with_the_current(
    recordings: list[Recording], mode: SegmentationMode
) -> None:
    assert _fading_tail_errors(recordings, mode) == []


@pytest.mark.real_data
@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(
            CRACKLE,
            marks=_xfail(
                "issue 20: the neighbour carries the weld on in 2 of 9 setups: its end lies "
                "+13.2 s (to the neighbour's end) and +0.6 s after the current's (measured "
                "2026-12-07)"
            ),
        ),
        pytest.param(
            ARC,
            marks=_xfail(
                "issue 20: the arc segmenter hears the neighbour as its own arc: 6 of 9 setups "
                "end +1.48 to +9.00 s after the current (measured 2026-12-07)"
            ),
        ),
    ],
)
def test_a_neighbour_that_starts_mid_weld_and_outlasts_it_does_not_carry_the_weld(
    recordings: list[Recording], mode: SegmentationMode
) -> None:
    assert _neighbour_errors(recordings, mode) == []


@pytest.mark.real_data
@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(
            CRACKLE,
            marks=_xfail(
                "issue 20: a soft strike starts the weld late in 5 of 9 setups, +0.51 to +0.65 s "
                "after the current (measured 2026-12-07)"
            ),
        ),
        pytest.param(
            ARC,
            marks=_xfail(
                "issue 20: the arc segmenter starts 8 of 9 soft strikes within 0.5 s; one "
                "(09-26-22-0041-00) +0.51 s after the current (measured 2026-12-07)"
            ),
        ),
    ],
)
def test_a_soft_strike_starts_with_the_current(
    recordings: list[Recording], mode: SegmentationMode
) -> None:
    assert _soft_strike_errors(recordings, mode) == []
