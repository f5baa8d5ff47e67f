"""Good-only enrollment: the reference, its calibration, the artifact and the cv protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.covariance import LedoitWolf

from deploy.audio import read_recording
from deploy.loader import load_artifact
from deploy.teach_rule import guards, taught_threshold
from tests.support.artifacts import export_untrained
from training.enroll import calibrate, enroll, fit_reference, ledoit_wolf
from training.enroll_cv import enrollment_cv
from training.evaluate import evaluate
from training.synthetic import generate_synthetic_dataset
from training.welds import find_welds
from weldmon.cli import EXIT_USAGE, main

torch.set_num_threads(1)
P_TOLERANCE = 1e-5  # replay vs the artifact's forward, as for supervised artifacts
quiet = lambda _: None  # noqa: E731

# The synthetic welds are steady tones without the arc's crackle: the gate cuts them (the
# crackle segmenter, the daemon's default, is tested on real recordings).
GATE = "gate"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("enroll") / "data"
    generate_synthetic_dataset(
        root, configs_per_class=3, runs_per_config=3, duration_s=8.0, idle_s=1.5
    )
    return root


def test_ledoit_wolf_equals_scikit_learns_estimator() -> None:
    x = np.random.default_rng(0).normal(size=(60, 12)) @ np.diag(np.linspace(0.2, 3.0, 12))
    assert ledoit_wolf(x) == pytest.approx(LedoitWolf().fit(x).covariance_, rel=1e-9, abs=1e-12)


def test_the_reference_whitens_its_own_windows() -> None:
    x = np.random.default_rng(1).normal(size=(400, 6)) * [1, 2, 3, 4, 5, 6] + 10.0
    mean, whiten = fit_reference(x)
    z = (x - mean) @ whiten.T
    assert np.cov(z.T) == pytest.approx(np.eye(6), abs=0.15)


def test_calibration_puts_the_threshold_at_the_requested_quantile() -> None:
    rng = np.random.default_rng(2)
    welds = [rng.normal(size=(20, 5)) for _ in range(30)]
    strict = calibrate(welds, false_alarm_rate=0.01, threshold=0.5, ratio=0.05)
    lax = calibrate(welds, false_alarm_rate=0.2, threshold=0.5, ratio=0.05)
    assert strict.centre > lax.centre  # a lower alarm rate needs a higher distance
    # 1 % of 30 welds: below one weld, so no leave-one-out weld may reach the threshold.
    assert strict.loo_false_alarm_rate() == 0.0
    assert 0.1 <= lax.loo_false_alarm_rate() <= 0.2
    logits = lax.loo_logits
    modelled = logits.mean() + 0.8416 * logits.std(ddof=1)
    observed = np.sort(logits)[::-1][6] + 1e-3  # 0.2 x 30 = 6 welds may reach it
    assert max(modelled, observed) == pytest.approx(0.0, abs=1e-3)


def test_an_enrolled_artifact_keeps_the_deploy_contract(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "cell.pt"
    result = enroll(
        synthetic, out, false_alarm_rate=0.05, name="cell-7", segmentation=GATE, log=quiet
    )
    model = load_artifact(out, expected_sha256=result.sha256)
    assert model.model_name == "cell-7"
    # The ONNX twin judges like the TorchScript module (the contract travels to ONNX too).
    onnx = load_artifact(out, expected_sha256=result.sha256, backend="onnx")
    probe = np.random.default_rng(3).normal(0, 0.1, (3, 16000)).astype(np.float32)
    assert onnx.window_probs(probe) == pytest.approx(
        load_artifact(out, backend="torchscript").window_probs(probe), abs=1e-4
    )
    assert (model.chunk_samples, model.defect_idx, model.threshold) == (16000, 1, 0.5)
    prov = model.metadata["provenance"]
    assert prov["kind"] == "enrolled" and prov["enrolled_welds"] == 9
    assert prov["calibration"]["left_out"] == "config folder"
    assert len(prov["enrolled_folders"]) == 3
    good = next((synthetic / "good_weld").rglob("*.flac"))
    samples = read_recording(good, 16000).samples
    verdict = model.predict(samples)
    assert (verdict.label, pytest.approx(verdict.p_defect, abs=1e-6)) == model.forward(samples)
    assert main(["predict", "--model", str(out), str(good)]) == 0
    assert main(["scan", "--model", str(out), "--out", str(tmp_path / "scan"), str(good)]) == 0


@pytest.mark.parametrize(("embedding", "auc_at_least"), [("mean_spread", 1.0), ("mean", 0.85)])
def test_in_one_cell_defect_welds_score_above_the_good_welds(
    embedding: str, auc_at_least: float, tmp_path: Path
) -> None:
    # One cell: the defects (crackle bursts, arc dropouts) are all that differs. They are
    # transient, so the band spread sees them all; the band mean alone most of them.
    root = tmp_path / "cell"
    generate_synthetic_dataset(
        root, configs_per_class=3, runs_per_config=3, duration_s=8.0, idle_s=1.5, one_cell=True
    )
    enroll(root, tmp_path / "cell.pt", embedding=embedding, segmentation=GATE, log=quiet)
    result = evaluate(tmp_path / "cell.pt", root, mode="weld", segmentation=GATE, workers=1)
    good = [w.p_defect for w in result.judged_welds if w.y_true == 0]
    defect = [w.p_defect for w in result.judged_welds if w.y_true == 1]
    assert len(good) == len(defect) == 9
    assert result.weld_metrics["ROC_AUC"] >= auc_at_least
    assert result.weld_metrics["FP"] == 0  # enrolled welds stay below the calibrated threshold


def test_a_cell_reference_added_to_a_supervised_artifact_only_raises_p_defect(
    synthetic: Path, tmp_path: Path
) -> None:
    base = export_untrained(tmp_path / "base", threshold=0.6).path
    fused = enroll(
        synthetic, tmp_path / "fused.pt", base=base, version="2.1", segmentation=GATE, log=quiet
    ).path
    sup, both = load_artifact(base), load_artifact(fused)
    assert both.model_version == "2.1"
    # issue 19: the cell's threshold is taught from its good welds, no longer the base's
    assert sup.threshold == 0.6 and both.metadata["provenance"]["teach_in"]["base_threshold"] == 0.6
    assert both.threshold == both.metadata["provenance"]["teach_in"]["threshold"]
    assert 0.5 <= both.threshold <= 0.95  # the rule's default guards around the base's 0.6
    assert both.metadata["provenance"]["kind"] == "fused"
    assert both.metadata["provenance"]["base"]["sha256"] == sup.sha256
    # A whistle (a 3 kHz tone) sounds like no weld of the cell: the reference must flag it.
    t = torch.arange(16000) / 16000
    windows = (0.3 * torch.sin(2 * torch.pi * 3000.0 * t)).repeat(2, 1)
    for path in sorted((synthetic / "defect_data_weld").rglob("*.flac"))[:2]:
        audio = torch.from_numpy(read_recording(path, 16000).samples[0])
        windows = torch.cat([windows, audio[: 3 * 16000].reshape(3, 16000)])
    p_sup, p_both = sup.window_probs(windows), both.window_probs(windows)
    assert np.all(p_both >= p_sup - 1e-6)
    assert np.all(p_both[:2] > 0.99) and np.all(p_sup[:2] < 0.9)
    with pytest.raises(Exception, match="already an enrolled artifact"):
        enroll(synthetic, tmp_path / "again.pt", base=fused, segmentation=GATE, log=quiet)


def test_enrollment_cv_holds_out_each_good_folder_and_scores_every_defect(
    synthetic: Path, tmp_path: Path
) -> None:
    result = enrollment_cv(synthetic, tmp_path / "cv", segmentation=GATE, log=quiet)
    assert result.n_folds == 3
    per_fold = {}
    for row in result.rows:
        per_fold.setdefault(row["fold"], []).append(row)
    for rows in per_fold.values():
        goods = {r["config_folder"] for r in rows if r["y_true"] == 0}
        assert len(goods) == 1 and goods == {rows[0]["held_out_good_folder"]}
        assert sum(r["y_true"] for r in rows) == 9  # every defect weld, every fold
    assert "FALSE_ALARM_RATE" in result.intervals
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert "never enrolled" in summary["protocol"]


def test_enroll_command_line_errors_are_usage_errors(synthetic: Path, tmp_path: Path) -> None:
    root = str(synthetic)
    out = str(tmp_path / "x.pt")
    assert main(["enroll", "--data-root", root]) == EXIT_USAGE
    assert main(["enroll", "--data-root", root, "--out", out, "--cv", out]) == EXIT_USAGE
    assert main(["enroll", "--data-root", root, "--out", out, "--false-alarm-rate", "0"]) == 2
    (tmp_path / "junk.pt").write_bytes(b"junk")
    bad_base = ["--base", str(tmp_path / "junk.pt")]
    assert main(["enroll", "--data-root", root, "--out", out, *bad_base]) == EXIT_USAGE
    assert main(["enroll", "--data-root", str(tmp_path / "nowhere"), "--out", out]) == 2
    assert main(["enroll", "--data-root", root, "--out", out, "--name", "bad name!"]) == 2
    assert not Path(out).exists()


def _weld_clips(recordings: list, folder: Path) -> list[tuple[object, Path]]:
    """Each recording's weld (the sensor log's arc) as its own file: what a file-mode replay
    of a trimmed weld judges."""
    clips = []
    for r in recordings:
        mono = read_recording(r.flac, 16000).samples[0]
        (weld,) = find_welds(r.flac, mono, 16000, "current")
        clip = folder / f"{r.run_id}.wav"
        sf.write(clip, mono[weld.start : weld.end], 16000, subtype="FLOAT")
        clips.append((r, clip))
    return clips


@pytest.mark.real_data
@pytest.mark.slow
def test_enrolled_on_four_good_sessions_replay_calls_a_fifth_good_and_every_defect_right(
    recordings: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held_out = "good_weld_5_09-26-22_plane_plate"
    data = tmp_path / "data"
    for r in recordings:
        if not r.is_defect and r.config_folder != held_out:
            run = data / "good_weld" / r.config_folder / r.run_id
            run.mkdir(parents=True)
            (run / r.flac.name).symlink_to(r.flac)
            (run / r.sensor_csv.name).symlink_to(r.sensor_csv)
    cell = tmp_path / "cell.pt"
    assert main(["enroll", "--data-root", str(data), "--out", str(cell)]) == 0
    model = load_artifact(cell)
    assert held_out not in model.metadata["provenance"]["enrolled_folders"]
    judged = [r for r in recordings if r.is_defect or r.config_folder == held_out]
    clips = _weld_clips(judged, tmp_path)
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"model: {{path: {cell}}}\nstate_dir: {tmp_path}\nmqtt: {{enabled: false}}\n"
        "logging: {level: error}\n"
    )
    capsys.readouterr()
    args = ["replay", "--config", str(config), "--segmentation", "file", "--no-progress"]
    assert main([*args, *(str(c) for _, c in clips)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    results = {Path(x["source"]["name"]).stem: x for x in lines if x["kind"] == "weld_result"}
    assert len(results) == len(clips) == 10
    for rec, clip in clips:
        result = results[rec.run_id]
        label, p = model.forward(read_recording(clip, 16000).samples)
        assert result["label"] == label and abs(result["p_defect"] - p) <= P_TOLERANCE
        assert result["model_sha256"] == model.sha256
        assert result["label"] == int(rec.is_defect), (rec.run_id, result["p_defect"])


@pytest.mark.real_data
@pytest.mark.slow
def test_enroll_into_a_base_teaches_the_cells_threshold_from_one_real_good_weld(
    recordings: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = next(r for r in recordings if not r.is_defect)
    run = tmp_path / "data" / "good_weld" / good.config_folder / good.run_id
    run.mkdir(parents=True)
    (run / good.flac.name).symlink_to(good.flac)
    (run / good.sensor_csv.name).symlink_to(good.sensor_csv)
    base_path = export_untrained(tmp_path / "base", threshold=0.6).path
    lines: list[str] = []
    cell_path = enroll(tmp_path / "data", tmp_path / "cell.pt", base=base_path, log=lines.append)
    base, cell = load_artifact(base_path), load_artifact(cell_path.path)

    provenance = cell.metadata["provenance"]
    assert provenance["kind"] == "taught" and provenance["teach_in"]["welds"] == 1
    assert any(line.startswith("warning: only 1 weld(s) taught") for line in lines), lines
    # the daemon's teach-in rule on the base's windows of that weld, with its default guards
    ((_, clip),) = _weld_clips([good], tmp_path)
    audio = torch.from_numpy(read_recording(clip, 16000).samples[0])
    windows = audio[: len(audio) // 16000 * 16000].reshape(-1, 16000)
    probs = base.window_probs(windows)
    expected = taught_threshold([list(probs)], 0.05, 0.01, *guards(0.6)).threshold
    assert cell.threshold == pytest.approx(expected, abs=1e-3)
    assert np.allclose(cell.window_probs(windows), probs, atol=1e-6)  # the base's classifier

    # replay runs it: the taught weld is judged by the taught threshold, and is good
    config = tmp_path / "monitor.yaml"
    config.write_text(
        f"model: {{path: {cell_path.path}}}\nstate_dir: {tmp_path}\nmqtt: {{enabled: false}}\n"
        "logging: {level: error}\n"
    )
    capsys.readouterr()
    args = ["replay", "--config", str(config), "--segmentation", "file", "--no-progress"]
    assert main([*args, str(clip)]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    (result,) = [x for x in out if x["kind"] == "weld_result"]
    assert result["threshold"] == cell.threshold and result["label"] == 0
