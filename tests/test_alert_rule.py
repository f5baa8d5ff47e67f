"""The early alert rests on the same evidence, judged the same way, as the result it announces
(deploy/alert_rule.py): property tests over random window streams and boundaries, and the
segmenters' half of the bargain (`arc_confirmed_until`) on the real recordings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.alert_rule import AlertRule, weld_label
from deploy.segment.crackle import CrackleSegmenter
from deploy.segment.crackle_params import CrackleParams
from deploy.segment.gate import GateParams, GateSegmenter
from deploy.segment.protocol import Segmenter
from monitor.events import Source, WeldAlert
from monitor.pipeline.tracker import ModelInfo, StationThresholds, TrackerOptions, WeldTracker
from tests.support.arc_truth import read_mono
from tests.support.data import Recording
from tests.support.factory_floor import pink_noise

CHUNK = 1_000
SHA = "cd" * 32
probability = st.floats(0.0, 1.0, allow_nan=False)


def _tracker(decision: float, alert: float, ratio: float, windows: int) -> WeldTracker:
    model = ModelInfo(SHA, 16_000, CHUNK, eval_pool_ratio=ratio, threshold=decision)
    options = TrackerOptions(
        model,
        "0.1.0",
        "gate",
        overrides={"cell1": StationThresholds.resolve(decision, decision, alert)},
        alert_windows=windows,
        include_window_probs=True,
    )
    return WeldTracker(options, "cell1", Source(type="device", name="mic"), 5_000, 1.7e9)


@settings(max_examples=150, deadline=None)
@given(
    probs=st.lists(st.none() | probability, min_size=0, max_size=80),
    decision=probability,
    alert=probability,
    ratio=st.floats(0.01, 1.0),
    windows=st.integers(1, 4),
    lags=st.lists(st.integers(0, 3 * CHUNK), min_size=80, max_size=80),
    end_extra=st.integers(0, 3 * CHUNK),
    data=st.data(),
)
def test_an_alert_is_never_followed_by_a_good_result(
    probs: list[float | None],
    decision: float,
    alert: float,
    ratio: float,
    windows: int,
    lags: list[int],
    end_extra: int,
    data: st.DataObject,
) -> None:
    """Windows come in order; after each the segmenter confirms the arc some way behind the
    newest sample (any lag), never past the end it decides later. Whatever the stream: at
    most one alert, an alert means a defect result, and a result whose windows meet the rule
    is a defect."""
    t = _tracker(decision, alert, ratio, windows)
    alerts: list[WeldAlert] = []
    confirmed = t.start_index
    for i, p in enumerate(probs):
        newest = t.start_index + (i + 1) * CHUNK
        alerts += [e for e in t.add_window(i, p, newest, True) if isinstance(e, WeldAlert)]
        confirmed = max(confirmed, newest - lags[i])
        alerts += t.confirm(confirmed)
    # the end lies at or after every confirmation, anywhere up to the newest sample and beyond
    newest = t.start_index + len(probs) * CHUNK
    end = data.draw(st.integers(confirmed, max(confirmed, newest) + end_extra), label="end")
    result = t.result(end, "gate")

    assert len(alerts) <= 1
    if alerts:
        assert result.label == 1 and result.alert_rule_met
        assert alerts[0].n_windows <= result.n_windows
    assert result.window_probs is not None
    if AlertRule(alert, windows).met(result.window_probs):
        assert result.label == 1
    if result.judged:
        assert result.label == weld_label(result.p_defect, decision, result.alert_rule_met)


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(probability, min_size=0, max_size=30),
    after=st.lists(probability, min_size=0, max_size=30),
    level=st.floats(0.5, 1.0),
    windows=st.integers(1, 3),
)
def test_evidence_mid_weld_alerts_before_the_result(
    before: list[float], after: list[float], level: float, windows: int
) -> None:
    """Early warning is kept: a run of high windows mid-weld, confirmed as it comes, raises
    the alert as soon as the run is complete, before the weld ends."""
    t = _tracker(0.5, 0.5, 0.05, windows)
    probs = before + [level] * windows + after
    alerted_at = None
    for i, p in enumerate(probs):
        end = t.start_index + (i + 1) * CHUNK
        out = t.add_window(i, p, end, False) + t.confirm(end)
        if any(isinstance(e, WeldAlert) for e in out):
            alerted_at = i
            break
    assert alerted_at is not None
    assert alerted_at <= len(before) + windows - 1


def test_the_result_follows_the_rule_with_the_alert_threshold_at_the_decision() -> None:
    # Up to 40 windows the rule never changes a label the pool gives (k <= 2 then).
    rng = np.random.default_rng(0)
    for _ in range(2_000):
        n = int(rng.integers(1, 41))
        probs = rng.uniform(0, 1, n).tolist()
        t = _tracker(0.5, 0.5, 0.05, 2)
        for i, p in enumerate(probs):
            t.add_window(i, p, t.start_index + (i + 1) * CHUNK, False)
        result = t.result(t.start_index + n * CHUNK, "gate")
        assert result.label == int(np.float32(result.p_defect) >= np.float32(0.5))


def _stream_confirmations(seg: Segmenter, x: np.ndarray, block: int) -> list[tuple[int, int, int]]:
    """(start, end, the furthest arc confirmation while it was open) of every weld."""
    welds: list[tuple[int, int, int]] = []
    start, furthest = None, 0
    for pos in range(0, x.size, block):
        boundaries = seg.process(x[pos : pos + block], pos)
        if pos + block >= x.size:
            boundaries += seg.close(x.size)
        for b in boundaries:
            if b.kind == "start":
                start, furthest = b.index, 0
            else:
                assert start is not None
                welds.append((start, b.index, furthest))
                start = None
        if seg.in_weld:
            furthest = max(furthest, seg.arc_confirmed_until)
            assert furthest <= pos + block  # never ahead of the audio
    return welds


# (the gate hears no weld under pink noise at -50 dBFS: nothing to check there)
@pytest.mark.parametrize(
    ("mode", "noise_dbfs"), [("crackle", None), ("crackle", -50.0), ("gate", None)]
)
def test_no_segmenter_ends_a_weld_before_the_arc_it_confirmed(
    recordings: list[Recording], mode: str, noise_dbfs: float | None
) -> None:
    """Every shared recording streamed in 0.1 s blocks (as recorded, and under pink noise at
    -50 dBFS): each weld's end lies at or after everything the segmenter confirmed while the
    weld was open, so a window behind an alert is always in the result."""
    confirmed_welds = 0
    for rec in recordings:
        x = read_mono(rec)
        if noise_dbfs is not None:
            rng = np.random.default_rng(7)
            x = (x + pink_noise(x.size, 16_000, noise_dbfs, rng)).astype(np.float32)
        seg: Segmenter = (
            CrackleSegmenter(CrackleParams(), 16_000)
            if mode == "crackle"
            else GateSegmenter(GateParams(), 16_000)
        )
        for start, end, furthest in _stream_confirmations(seg, x, 1_600):
            assert end >= furthest, f"{rec.run_id}: end {end} before confirmed {furthest}"
            if furthest > start:
                confirmed_welds += 1
    assert confirmed_welds >= len(recordings) // 2  # the contract was exercised, not vacuous
