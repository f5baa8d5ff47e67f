"""The k-NN good-only scorer, the scorers' comparison (`enroll --cv`) and the teach-in
acceptance protocol (`enroll --cv --teach K`), on tiny synthetic data (issue 19, item 3)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy.anomaly import spectral_embedding
from deploy.audio import read_recording
from deploy.goodonly_knn import fit_knn
from deploy.loader import load_artifact
from training.enroll import EnrollmentError, calibrate, enroll, reference_distances
from training.enroll_cv import compare_scorers, rate_interval
from training.enroll_teach import SUPERVISED, deal, methods, teach_protocol, teach_sets
from training.metrics import wilson_interval
from training.synthetic import generate_synthetic_dataset
from training.welds import find_welds
from weldmon.cli import EXIT_USAGE, main

torch.set_num_threads(1)
quiet = lambda _: None  # noqa: E731
GATE = "gate"  # the synthetic welds are steady tones: the gate cuts them (as in test_enroll)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good and two defect config folders of three short welds each."""
    root = tmp_path_factory.mktemp("knn") / "data"
    generate_synthetic_dataset(
        root, configs_per_class=2, runs_per_config=3, duration_s=5.0, idle_s=1.0
    )
    return root


def _cloud(rng: np.random.Generator, centre: float, n: int) -> np.ndarray:
    return rng.normal(centre, 0.3, size=(n, 4))


def test_knn_follows_two_good_settings_that_one_mahalanobis_ellipse_blurs() -> None:
    # A cell with two process settings: its good windows are two clouds. Halfway between
    # them lies no good weld; k-NN calls it far, Mahalanobis (one ellipse) calls it central.
    rng = np.random.default_rng(0)
    welds = [_cloud(rng, c, 30) for c in (-3.0, -3.0, 3.0, 3.0)]
    new_good, between = _cloud(rng, 3.0, 10), np.zeros((10, 4))
    knn = [reference_distances("knn", welds, x).mean() for x in (new_good, between)]
    maha = [reference_distances("mahalanobis", welds, x).mean() for x in (new_good, between)]
    assert knn[1] > 3 * knn[0]
    assert maha[1] < maha[0]


def test_knn_distance_is_normalised_by_the_banks_own_spread() -> None:
    # Scaling every embedding (a louder cell) leaves the normalised distances unchanged, and
    # a new weld like the bank's sits near 1 (the median leave-one-weld-out distance).
    rng = np.random.default_rng(1)
    welds = [_cloud(rng, 0.0, 40) for _ in range(5)]
    probe = _cloud(rng, 0.0, 40)
    d = reference_distances("knn", welds, probe)
    loud = reference_distances("knn", [w * 10.0 for w in welds], probe * 10.0)
    assert loud == pytest.approx(d, rel=1e-4)
    assert 0.7 < float(np.median(d)) < 1.4


def test_knn_reference_refuses_what_it_cannot_score() -> None:
    with pytest.raises(ValueError, match="no window"):
        fit_knn([np.zeros((0, 3))])
    # a bank of one weld still gives a finite normaliser (its windows' distances to each other)
    one = fit_knn([np.random.default_rng(2).normal(size=(5, 3))])
    assert one.norm > 0 and one.k <= 4


def test_knn_calibration_scores_what_the_artifact_computes() -> None:
    rng = np.random.default_rng(3)
    welds = [rng.normal(size=(20, 6)) for _ in range(8)]
    cal = calibrate(welds, false_alarm_rate=0.05, threshold=0.5, ratio=0.05, scorer="knn")
    module = fit_knn(welds, centre=cal.centre, scale=cal.scale)
    probe = rng.normal(size=(7, 6))
    with torch.no_grad():
        logits = module(torch.from_numpy(probe).float()).double().numpy()
    expected = (reference_distances("knn", welds, probe) - cal.centre) / cal.scale
    assert logits == pytest.approx(expected, abs=1e-5)


def test_band_statistics_embedding_adds_spread_and_modulation() -> None:
    maps = torch.randn(3, 1, 40, 47)
    emb = spectral_embedding(maps, "mean_spread_delta")
    assert emb.shape == (3, 120)
    assert torch.equal(emb[:, :80], spectral_embedding(maps, "mean_spread"))
    steady = torch.ones(1, 1, 40, 47)
    assert torch.all(spectral_embedding(steady, "mean_spread_delta")[:, 80:] == 0)


def test_a_knn_enrolled_artifact_keeps_the_deploy_contract(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "cell.pt"
    result = enroll(tiny, out, scorer="knn", false_alarm_rate=0.05, segmentation=GATE, log=quiet)
    model = load_artifact(out, expected_sha256=result.sha256, backend="torchscript")
    onnx = load_artifact(out, expected_sha256=result.sha256, backend="onnx")
    probe = np.random.default_rng(4).normal(0, 0.1, (3, 16000)).astype(np.float32)
    assert onnx.window_probs(probe) == pytest.approx(model.window_probs(probe), abs=1e-4)
    prov = model.metadata["provenance"]
    assert (prov["kind"], prov["scorer"], prov["embedding"]) == ("enrolled", "knn", "mean")
    assert model.metadata["model"]["scorer"] == "knn"


def test_enroll_cv_compares_both_scorers_on_the_same_welds(tiny: Path, tmp_path: Path) -> None:
    results, lines = compare_scorers(tiny, tmp_path / "cv", segmentation=GATE, log=quiet)
    assert set(results) == {"mahalanobis", "knn"}
    welds = [sorted((r["fold"], r["weld"]) for r in res.rows) for res in results.values()]
    assert welds[0] == welds[1]  # one protocol, two scorers
    for name in results:
        summary = json.loads((tmp_path / "cv" / name / "cv_summary.json").read_text())
        assert summary["scorer"] == name
        assert any(line.startswith(f"| {name} (") for line in lines)


def test_rates_over_repeated_scorings_get_the_interval_of_the_distinct_welds() -> None:
    # 40 scorings of 8 welds, all detected: as sure as 8 of 8, not as 40 of 40
    assert rate_interval(1.0, 8) == pytest.approx(wilson_interval(8, 8))
    assert rate_interval(0.25, 8) == pytest.approx(wilson_interval(2, 8))


def test_teach_sets_are_cyclic_blocks_of_k_welds() -> None:
    welds = ["a", "b", "c"]
    assert teach_sets(welds, 1) == [[0], [1], [2]]  # type: ignore[arg-type]
    assert teach_sets(welds, 2) == [[0, 1], [1, 2], [2, 0]]  # type: ignore[arg-type]
    assert teach_sets(welds, 3) == [[0, 1, 2]]  # type: ignore[arg-type]
    assert teach_sets(welds, 4) == []  # type: ignore[arg-type]


def test_folders_are_dealt_round_robin_into_the_groups_models_leave_out() -> None:
    assert deal(list("abcde"), 3) == [["a", "d"], ["b", "e"], ["c"]]
    assert deal(list("ab"), 3) == [["a"], ["b"]]  # never an empty group


def test_teach_protocol_refuses_groups_that_leave_a_model_nothing_to_learn(
    tiny: Path, tmp_path: Path
) -> None:
    with pytest.raises(EnrollmentError, match="two good and two defect groups"):
        teach_protocol(tiny, tmp_path / "t", groups=(1, 2), segmentation=GATE, log=quiet)
    assert not (tmp_path / "t" / "models").exists()


def test_teach_protocol_never_scores_a_weld_it_taught_or_trained_on(
    tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "teach"
    table = teach_protocol(
        tiny, out, teach=(1, 3), segmentation=GATE, epochs=1, cache_dir=tmp_path / "c", log=quiet
    )
    with (out / "teach_scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    held_out = {
        p.parent.name: json.loads(p.read_text()) for p in out.glob("models/*/held_out.json")
    }
    assert len(held_out) == 4  # 2 good x 2 defect folders, one group each
    for r in rows:
        assert r["weld"] not in r["taught"].split("+")
        if r["y_true"] == "0":
            assert r["config_folder"] == r["cell"]  # the cell's own other welds
        if r["model"]:  # supervised, fused, or k-NN on a model's penultimate layer
            model = held_out[r["model"]]
            assert r["cell"] in model["good"]  # trained without the cell ...
            if r["y_true"] == "1":  # ... and without the defect folder it judges
                assert r["config_folder"] in model["defect"]
    by_k = {(t["K"], t["method"]): t for t in table}
    assert set(by_k) == {(k, m) for k in (1, 3) for m in methods(["mahalanobis", "knn"])}
    # K=1: 3 teach sets per folder, each scoring the 2 others; K=3 teaches all three welds
    # of a folder: no good weld is left to score, every defect weld still is
    assert (
        by_k[(1, "good-only (knn)")]["good_scorings"],
        by_k[(1, "good-only (knn)")]["good_welds"],
    ) == (12, 6)
    assert by_k[(3, "good-only (mahalanobis)")]["good_scorings"] == 0
    assert by_k[(3, "good-only (mahalanobis)")]["defect_welds"] == 6
    # supervised: each good scored by both of its cell's models, each defect by one per set
    assert by_k[(1, SUPERVISED)]["good_scorings"] == 24
    assert by_k[(1, SUPERVISED)]["defect_scorings"] == 2 * 3 * 6
    # k-NN on each model's penultimate layer judges what that model judges
    penultimate = by_k[(1, "good-only (knn, penultimate)")]
    assert penultimate["defect_scorings"] == by_k[(1, SUPERVISED)]["defect_scorings"]
    assert by_k[(1, "fused (knn)")]["defect_scorings"] == by_k[(1, SUPERVISED)]["defect_scorings"]
    summary = json.loads((out / "teach_summary.json").read_text())
    assert summary["supervised"] == {"width": 8, "ensemble": 1, "epochs": 1, "seed": 42}


def test_teach_protocol_command_line_errors_are_usage_errors(tiny: Path, tmp_path: Path) -> None:
    root = str(tiny)
    out = str(tmp_path / "x")
    assert main(["enroll", "--data-root", root, "--out", out, "--teach", "1"]) == EXIT_USAGE
    assert main(["enroll", "--data-root", root, "--cv", out, "--teach", "0"]) == EXIT_USAGE
    cv = ["enroll", "--data-root", root, "--cv", out]
    assert main([*cv, "--teach", "1", "--teach-epochs", "0"]) == EXIT_USAGE
    assert main([*cv, "--teach", "1", "--teach-groups", "0", "2"]) == EXIT_USAGE
    assert main([*cv, "--embedding", "mean"]) == EXIT_USAGE
    assert not Path(out).exists()


def _weld_windows(flac: Path) -> np.ndarray:
    """The real recording's weld (its sensor log's arc) as whole 1 s windows."""
    mono = read_recording(flac, 16000).samples[0]
    (weld,) = find_welds(flac, mono, 16000, "current")
    n = (weld.end - weld.start) // 16000
    return mono[weld.start : weld.start + n * 16000].reshape(n, 16000)


@pytest.mark.real_data
@pytest.mark.slow
def test_knn_into_the_original_pipelines_artifact_flags_a_real_defect_weld(
    recordings: list, compat_artifact: Path, tmp_path: Path
) -> None:
    # The compat artifact's classifier (random weights) with a k-NN reference of three good
    # welds of one real session: a fourth weld of that session stays below a real
    # lack-of-fusion weld, fusion only ever raises p_defect, and the ONNX twin agrees.
    session = [r for r in recordings if r.config_folder == "good_weld_sample_08-17-22"]
    for r in session[:3]:
        run = tmp_path / "data" / "good_weld" / r.config_folder / r.run_id
        run.mkdir(parents=True)
        (run / r.flac.name).symlink_to(r.flac)
        (run / r.sensor_csv.name).symlink_to(r.sensor_csv)
    out = tmp_path / "cell.pt"
    enroll(tmp_path / "data", out, base=compat_artifact, scorer="knn", log=quiet)
    cell = load_artifact(out, backend="torchscript")
    base = load_artifact(compat_artifact, backend="torchscript")
    assert (cell.metadata["provenance"]["kind"], cell.metadata["provenance"]["scorer"]) == (
        "fused",
        "knn",
    )
    defect = next(r for r in recordings if r.label == "lack_of_fusion")
    good, bad = _weld_windows(session[3].flac), _weld_windows(defect.flac)
    assert (
        cell.judge(cell.window_probs(good)).p_defect < cell.judge(cell.window_probs(bad)).p_defect
    )
    both = np.concatenate([good, bad])
    assert np.all(cell.window_probs(both) >= base.window_probs(both) - 1e-6)
    onnx = load_artifact(out, backend="onnx")
    assert onnx.window_probs(both) == pytest.approx(cell.window_probs(both), abs=1e-4)
