"""Training config: original-recipe defaults, unknown keys named, the original JSON accepted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from deploy.frontend_params import FrontEndParams
from training.config import ConfigError, TrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "configs" / "train.example.yaml"


def _write(path: Path, raw: dict) -> Path:
    path.write_text(json.dumps(raw))
    return path


def test_defaults_are_the_original_recipe() -> None:
    cfg = TrainConfig()
    assert (cfg.topk_ratio_pos, cfg.topk_ratio_neg, cfg.eval_pool_ratio) == (0.05, 0.2, 0.05)
    assert (cfg.good_window_weight, cfg.batch_size, cfg.seed, cfg.grad_clip) == (0.25, 8, 42, 5.0)
    assert (cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels, cfg.chunk_samples) == (
        1024,
        640,
        320,
        40,
        16000,
    )


def test_threshold_grid_runs_from_0_05_to_0_95_in_steps_of_0_05() -> None:
    grid = TrainConfig().threshold_grid()
    assert len(grid) == 19
    assert grid[0] == 0.05 and grid[-1] == 0.95 and 0.35 in grid


def test_example_config_loads_and_equals_the_defaults_except_data() -> None:
    cfg = load_config(EXAMPLE)
    defaults = TrainConfig().model_dump()
    differing = {k for k, v in cfg.model_dump().items() if v != defaults[k]}
    assert differing <= {"data_root"}


def test_unknown_flat_key_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="learning_rat"):
        load_config(_write(tmp_path / "c.json", {"learning_rat": 0.1}))


def test_nan_is_rejected_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("lr: .nan\n")
    with pytest.raises(ConfigError, match="lr"):
        load_config(tmp_path / "c.yaml")


def test_original_json_config_is_mapped_key_by_key(tmp_path: Path) -> None:
    original = {
        "audio": {
            "feature_params": {"sample_rate": 16000, "n_fft": 1024, "n_mels": 40},
            "model": {"dropout": 0.3},
            "training": {
                "lr": 0.0003,
                "weight_decay": 0.0001,
                "epochs": 45,
                "patience": 10,
                "seed": 7,
                "sequence_mil": {
                    "enabled": True,
                    "batch_size": 6,
                    "topk_ratio_pos": 0.1,
                    "topk_ratio_neg": 0.3,
                    "eval_pool_ratio": 0.15,
                    "auto_threshold": False,
                    "threshold": 0.6,
                    "good_window_weight": 0.5,
                },
            },
        }
    }
    cfg = load_config(_write(tmp_path / "master_config.json", original))
    assert (cfg.dropout, cfg.lr, cfg.epochs, cfg.patience, cfg.seed) == (0.3, 0.0003, 45, 10, 7)
    assert (cfg.batch_size, cfg.topk_ratio_pos, cfg.topk_ratio_neg) == (6, 0.1, 0.3)
    assert (cfg.eval_pool_ratio, cfg.auto_threshold, cfg.threshold) == (0.15, False, 0.6)
    assert cfg.good_window_weight == 0.5


def test_original_window_and_hop_in_seconds_become_samples(tmp_path: Path) -> None:
    original = {"audio": {"feature_params": {"frame_length_in_s": 0.04, "frame_step_in_s": 0.02}}}
    cfg = load_config(_write(tmp_path / "c.json", original))
    assert (cfg.win_length, cfg.hop_length) == (640, 320)


def test_unknown_key_in_sequence_mil_is_an_error_naming_its_path(tmp_path: Path) -> None:
    original = {"audio": {"training": {"sequence_mil": {"topk_ratio": 0.1}}}}
    with pytest.raises(ConfigError, match=r"audio\.training\.sequence_mil\.topk_ratio"):
        load_config(_write(tmp_path / "c.json", original))


def test_unknown_audio_section_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"audio\.optimizer"):
        load_config(_write(tmp_path / "c.json", {"audio": {"optimizer": {}}}))


def test_original_config_with_mil_disabled_is_refused(tmp_path: Path) -> None:
    original = {"audio": {"training": {"sequence_mil": {"enabled": False}}}}
    with pytest.raises(ConfigError, match="enabled"):
        load_config(_write(tmp_path / "c.json", original))


def test_inconsistent_front_end_is_refused() -> None:
    with pytest.raises(ValueError, match="win_length"):
        TrainConfig(win_length=2048)
    assert math.isclose(TrainConfig(chunk_seconds=0.5).chunk_samples, 8000)


def test_train_command_with_an_unknown_key_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from weldmon.cli import main

    path = _write(tmp_path / "c.json", {"topk_ratio": 0.1})
    assert main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert "topk_ratio" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_front_end_is_one_frontendparams_set_by_flat_keys_or_one_mapping(
    tmp_path: Path,
) -> None:
    flat = load_config(_write(tmp_path / "flat.json", {"n_mels": 32, "f_max": 7000.0}))
    nested = load_config(_write(tmp_path / "nested.json", {"front_end": {"n_mels": 32}}))
    assert flat.frontend() == FrontEndParams(n_mels=32, f_max=7000.0)
    assert nested.frontend() == FrontEndParams(n_mels=32)
    assert (flat.n_mels, flat.f_max) == (32, 7000.0)


def test_a_dump_keeps_the_flat_keys_and_loads_back_equal() -> None:
    cfg = TrainConfig(n_fft=512, win_length=400, hop_length=160)
    dumped = cfg.model_dump()
    assert "front_end" not in dumped
    assert {k: dumped[k] for k in ("n_fft", "win_length", "hop_length")} == {
        "n_fft": 512,
        "win_length": 400,
        "hop_length": 160,
    }
    assert TrainConfig(**dumped) == cfg
    assert json.loads(cfg.model_dump_json()) == dumped


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"n_fft": 0}, "n_fft"),
        ({"f_max": ".nan"}, "f_max"),
        ({"n_mels": 32, "front_end": {"n_mels": 40}}, "n_mels"),
        ({"front_end": {"db_floor": 1e-5}}, "db_floor"),
        ({"front_end": {"n_mel": 40}}, "n_mel"),
    ],
)
def test_a_bad_front_end_setting_is_an_error_naming_it(
    tmp_path: Path, raw: dict, named: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw).replace("'.nan'", ".nan"))
    with pytest.raises(ConfigError, match=named):
        load_config(path)
