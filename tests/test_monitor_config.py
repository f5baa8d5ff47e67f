"""monitor.config: YAML -> validated sections; every problem named by its key, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.config import ConfigError, load_config, parse_config
from weldmon.cli import EXIT_USAGE, main


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"not checked by the config loader")
    return path


def _minimal(model_file: Path, tmp_path: Path) -> dict:
    return {"model": {"path": str(model_file)}, "state_dir": str(tmp_path)}


def test_minimal_config_gets_documented_defaults(tmp_path: Path, model_file: Path) -> None:
    cfg = load_config(_write(tmp_path, _minimal(model_file, tmp_path)))
    assert cfg.audio.channel_mode == "mix"
    assert cfg.audio.station_names() == ["station1"]
    assert cfg.segmentation.mode == "crackle"
    assert cfg.mqtt.enabled is True


def test_unknown_key_is_named_with_its_section(tmp_path: Path, model_file: Path) -> None:
    data = _minimal(model_file, tmp_path) | {"audio": {"chanels": 2}}
    with pytest.raises(ConfigError, match=r"audio\.chanels: Extra inputs are not permitted"):
        load_config(_write(tmp_path, data))


def test_every_error_is_reported_at_once(tmp_path: Path, model_file: Path) -> None:
    data = _minimal(model_file, tmp_path) | {
        "audio": {"channels": 0, "channel_mode": "stereo"},
        "mqtt": {"port": 70000},
    }
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, data))
    message = str(info.value)
    for key in ("audio.channels", "audio.channel_mode", "mqtt.port"):
        assert key in message


def test_nan_is_refused_for_float_settings(tmp_path: Path, model_file: Path) -> None:
    data = _minimal(model_file, tmp_path) | {"audio": {"block_s": float("nan")}}
    with pytest.raises(ConfigError, match=r"audio\.block_s"):
        load_config(_write(tmp_path, data))


def test_per_channel_needs_one_station_per_channel(tmp_path: Path, model_file: Path) -> None:
    data = _minimal(model_file, tmp_path) | {
        "audio": {"channels": 3, "channel_mode": "per_channel", "stations": ["a", "b"]}
    }
    with pytest.raises(ConfigError, match="per_channel needs 3 station"):
        load_config(_write(tmp_path, data))


def test_station_names_must_be_topic_safe(tmp_path: Path, model_file: Path) -> None:
    data = _minimal(model_file, tmp_path) | {"audio": {"stations": ["cell/1"]}}
    with pytest.raises(ConfigError, match=r"audio\.stations\.0"):
        load_config(_write(tmp_path, data))


def test_missing_model_and_state_dir_are_named(tmp_path: Path) -> None:
    # A missing state_dir whose parent exists is created (tests/test_faults_install.py).
    state = tmp_path / "gone" / "state"
    data = {"model": {"path": str(tmp_path / "nope.pt")}, "state_dir": str(state)}
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, data))
    assert "model.path: no such file" in str(info.value)
    assert "state_dir: no such directory" in str(info.value)


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, model_file: Path) -> None:
    cfg = load_config(_write(tmp_path, {"model": {"path": model_file.name}, "state_dir": "."}))
    assert cfg.model.path == model_file


def test_sha256_pin_must_be_hex(tmp_path: Path, model_file: Path) -> None:
    data = _minimal(model_file, tmp_path)
    data["model"]["sha256"] = "abc"
    with pytest.raises(ConfigError, match=r"model\.sha256"):
        load_config(_write(tmp_path, data))


def test_bad_config_exits_with_usage_code(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _minimal(model_file, tmp_path) | {"segmentation": {"mode": "magic"}}
    code = main(["replay", "--config", str(_write(tmp_path, data)), str(tmp_path)])
    assert code == EXIT_USAGE
    assert "segmentation.mode" in capsys.readouterr().err


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "configs" / "monitor.example.yaml"
    cfg = load_config(example, check_files=False)
    assert cfg.model.sha256 is None or len(cfg.model.sha256) == 64


def test_operations_sections_have_safe_defaults(tmp_path: Path, model_file: Path) -> None:
    cfg = load_config(_write(tmp_path, _minimal(model_file, tmp_path)))
    assert (cfg.http.enabled, cfg.http.host, cfg.http.port) == (True, "127.0.0.1", 9108)
    assert cfg.clips.policy == "defect"
    assert cfg.homeassistant.enabled is False
    assert cfg.audio.silence_alarm_s == 60.0


def test_bad_operations_values_are_named_by_key(tmp_path: Path, model_file: Path) -> None:
    data = _minimal(model_file, tmp_path) | {
        "http": {"port": 70000},
        "clips": {"policy": "sometimes"},
        "homeassistant": {"discovery_prefix": "ha/#"},
        "audio": {"silence_alarm_s": 0},
        "watchdog": {"max_audio_age_s": -1.0},
    }
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, data))
    for key in (
        "http.port",
        "clips.policy",
        "homeassistant.discovery_prefix",
        "audio.silence_alarm_s",
        "watchdog.max_audio_age_s",
    ):
        assert key in str(info.value)


def test_dead_microphone_alarm_can_be_switched_off(tmp_path: Path, model_file: Path) -> None:
    data = _minimal(model_file, tmp_path) | {"audio": {"silence_alarm_s": None}}
    assert load_config(_write(tmp_path, data)).audio.silence_alarm_s is None


def _keys(value: object, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return set()
    out = set()
    for key, inner in value.items():
        out.add(prefix + key)
        out |= _keys(inner, f"{prefix}{key}.")
    return out


def test_example_config_shows_every_key_of_every_section() -> None:
    example = Path(__file__).resolve().parents[1] / "configs" / "monitor.example.yaml"
    shown = _keys(yaml.safe_load(example.read_text()))
    every = _keys(load_config(example, check_files=False).model_dump(mode="json"))
    # client_id is commented out on purpose (its default depends on the host name)
    assert every - shown == {"mqtt.client_id"}


def test_example_config_shows_the_defaults() -> None:
    example = Path(__file__).resolve().parents[1] / "configs" / "monitor.example.yaml"
    shown = load_config(example, check_files=False)
    defaults = parse_config(
        {"model": {"path": str(shown.model.path)}, "state_dir": str(shown.state_dir)},
        check_files=False,
    )
    assert shown.model_dump(exclude={"mqtt": {"client_id"}}) == defaults.model_dump(
        exclude={"mqtt": {"client_id"}}
    )
