"""monitor.pipeline.tracker: rolling top-k verdict, one alert, result over whole windows."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from deploy.confidence import ConfidenceBand
from deploy.pooling import topk_pool
from monitor.events import Source, WeldAlert, WeldProgress
from monitor.pipeline.tracker import ModelInfo, TrackerOptions, WeldTracker

torch.set_num_threads(1)
SHA = "ab" * 32
MODEL = ModelInfo(SHA, 16_000, 16_000, eval_pool_ratio=0.2, threshold=0.6)


def _tracker(**kw: object) -> WeldTracker:
    options = TrackerOptions(MODEL, "0.1.0", "gate", **kw)  # type: ignore[arg-type]
    return WeldTracker(options, "cell1", Source(type="device", name="mic"), 32_000, 1.7e9)


def _feed(t: WeldTracker, probs: list[float], confirm: bool = True) -> list:
    """Each window, then (``confirm``) the segmenter's word that the arc ran through it."""
    out = []
    for i, p in enumerate(probs):
        end = t.start_index + (i + 1) * 16_000
        out += t.add_window(i, p, end, progress=True)
        if confirm:
            out += t.confirm(end)
    return out


def test_progress_carries_the_deploy_pooling_of_the_windows_so_far() -> None:
    t = _tracker()
    probs = [0.1, 0.3, 0.2, 0.5, 0.4]
    events = [e for e in _feed(t, probs) if isinstance(e, WeldProgress)]
    for i, e in enumerate(events):
        expected = float(topk_pool(torch.tensor(probs[: i + 1]), MODEL.eval_pool_ratio))
        assert e.p_defect == pytest.approx(expected, abs=1e-7)
        assert e.n_windows == i + 1


def test_alert_is_sent_once_when_two_confirmed_windows_in_a_row_reach_the_threshold() -> None:
    t = _tracker()
    events = _feed(t, [0.1, 0.9, 0.3, 0.9, 0.95, 0.2, 0.99, 0.99])
    alerts = [e for e in events if isinstance(e, WeldAlert)]
    assert len(alerts) == 1  # one window over it (0.9 at 1) is no evidence yet
    assert alerts[0].n_windows == 5 and alerts[0].alert_windows == 2
    assert alerts[0].at.timestamp() == pytest.approx(1.7e9 + 2.0 + 5.0, abs=1e-3)


def test_no_alert_rests_on_windows_the_segmenter_has_not_confirmed() -> None:
    t = _tracker()
    events = _feed(t, [0.1, 0.2, 0.9, 0.95], confirm=False)
    assert not [e for e in events if isinstance(e, WeldAlert)]
    # the arc is confirmed through window 2 only: window 3 may lie past the end
    assert t.confirm(t.start_index + 3 * 16_000) == []
    alerts = t.confirm(t.start_index + 4 * 16_000)
    assert len(alerts) == 1 and alerts[0].n_windows == 4


def test_the_arc_ending_before_the_run_means_no_alert_and_a_good_result() -> None:
    # The field case: a window cut after the arc stopped scored high; the end, decided later,
    # lies before it, so it was never evidence and the result over the weld says good.
    t = _tracker()
    events = _feed(t, [0.1, 0.2, 0.3], confirm=True)
    events += _feed_more(t, [0.95, 0.97], confirm=False)
    assert not [e for e in events if isinstance(e, WeldAlert)]
    result = t.result(t.start_index + 3 * 16_000 + 100, "gate")
    assert result.label == 0 and not result.alert_rule_met


def _feed_more(t: WeldTracker, probs: list[float], confirm: bool) -> list:
    out = []
    for p in probs:
        i = len(t.probs)
        end = t.start_index + (i + 1) * 16_000
        out += t.add_window(i, p, end, progress=True)
        if confirm:
            out += t.confirm(end)
    return out


def test_a_result_whose_windows_meet_the_alert_rule_is_a_defect() -> None:
    # 60 windows: k = 3 of them, so two high windows pool under the threshold (0.6) ...
    t = _tracker()
    probs = [0.1] * 30 + [0.9, 0.9] + [0.1] * 28
    events = _feed(t, probs)
    assert len([e for e in events if isinstance(e, WeldAlert)]) == 1
    result = t.result(t.start_index + 60 * 16_000, "gate")
    assert result.p_defect < 0.6  # (0.9 + 0.9 + 0.1) / 3
    # ... but the alert announced a defect, and the result says so
    assert result.label == 1 and result.alert_rule_met


def test_result_pools_only_the_whole_windows_before_the_end() -> None:
    t = _tracker()
    _feed(t, [0.1, 0.2, 0.99], confirm=False)  # the third window reaches past the end decided later
    result = t.result(t.start_index + 2 * 16_000 + 500, "gate")
    assert result.n_windows == 2
    assert result.p_defect == pytest.approx(0.2, abs=1e-7)
    assert result.label == 0 and result.label_name == "good_weld"
    assert result.duration_s == pytest.approx(2 + 500 / 16_000)


def test_result_times_come_from_the_sample_clock() -> None:
    t = _tracker()
    result = t.result(t.start_index + 48_000, "gate")
    assert result.started_at.timestamp() == pytest.approx(1.7e9 + 2.0, abs=1e-3)
    assert result.ended_at.timestamp() == pytest.approx(1.7e9 + 5.0, abs=1e-3)


def test_weld_shorter_than_a_window_is_reported_too_short() -> None:
    t = _tracker()
    result = t.result(t.start_index + 8000, "gate")
    assert result.degraded and result.degraded_reasons == ["too_short"]
    assert result.n_windows == 0


def test_a_failed_window_degrades_the_weld_and_is_left_out() -> None:
    t = _tracker(include_window_probs=True)
    t.add_window(0, 0.3, t.start_index + 16_000, progress=False)
    t.add_window(1, None, t.start_index + 32_000, progress=False)
    result = t.result(t.start_index + 32_000, "gate")
    assert result.window_probs == [pytest.approx(0.3)]
    assert result.degraded_reasons == ["inference_failed"]


def test_weld_ids_are_unique_and_name_the_station() -> None:
    ids = {_tracker().weld_id for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("cell1-") for i in ids)


def test_results_carry_the_margin_and_the_confidence_of_a_calibrated_model() -> None:
    meta = {"calibration": {"band": [0.5, 0.7]}}  # the artifact's out-of-fold uncertain zone
    band = ConfidenceBand.from_metadata(meta, MODEL.threshold)
    calibrated = replace(MODEL, confidence_band=band)
    expected = {0.55: "low", 0.69: "low", 0.2: "high", 0.95: "high"}
    for p, confidence in expected.items():
        t = WeldTracker(
            TrackerOptions(calibrated, "0.1.0", "gate"),
            "cell1",
            Source(type="device", name="mic"),
            0,
            1.7e9,
        )
        t.add_window(0, p, 16_000, progress=False)
        result = t.result(16_000, "gate")
        assert result.confidence == confidence
        assert result.margin == pytest.approx(p - MODEL.threshold)
    # an uncalibrated model says nothing about confidence, never a guess
    t = _tracker()
    t.add_window(0, 0.55, t.start_index + 16_000, progress=False)
    assert t.result(t.start_index + 16_000, "gate").confidence is None


@pytest.mark.parametrize(
    "meta",
    [{}, {"calibration": None}, {"calibration": {"band": [0.7, 0.5]}},
     {"calibration": {"band": [0.1]}}, {"calibration": {"band": ["a", 0.5]}},
     {"calibration": {"band": [float("nan"), 0.5]}}, {"calibration": {"band": [-0.1, 0.5]}}],
)  # fmt: skip
def test_a_missing_or_malformed_band_gives_no_confidence(meta: dict) -> None:
    assert ConfidenceBand.from_metadata(meta, 0.6) is None


def test_the_band_follows_a_stations_own_threshold() -> None:
    band = ConfidenceBand.from_metadata({"calibration": {"band": [0.5, 0.7]}}, 0.6)
    assert band is not None
    assert band.judge(0.85, 0.8) == "low" and band.judge(0.65, 0.8) == "high"
