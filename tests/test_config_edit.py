"""monitor/config_edit.py: one section of the YAML config rewritten in place, every other line
(comments too) as the operator wrote it; files replaced atomically or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.config_edit import NEW_SUFFIX, ConfigWriteError, with_section, write_atomically

CONFIG = """\
# plant 3, line 2
model:
  path: /opt/weldmon/a.onnx  # production
  sha256: null
# the candidate, on trial since Monday
shadow:
  path: /opt/weldmon/b.onnx
audio:
  stations: [cell1]  # one microphone
state_dir: /var/lib/weldmon
"""


def test_a_section_is_replaced_and_every_other_line_is_kept() -> None:
    text = with_section(CONFIG, "model", {"path": "/opt/weldmon/b.onnx", "sha256": "ab" * 32})
    assert yaml.safe_load(text)["model"] == {"path": "/opt/weldmon/b.onnx", "sha256": "ab" * 32}
    assert text == CONFIG.replace(
        "  path: /opt/weldmon/a.onnx  # production\n  sha256: null\n",
        f"  path: /opt/weldmon/b.onnx\n  sha256: {'ab' * 32}\n",
    )


def test_a_block_section_can_become_null_and_the_comment_after_it_stays() -> None:
    text = with_section(CONFIG, "shadow", None)
    data = yaml.safe_load(text)
    assert data["shadow"] is None and data["audio"] == {"stations": ["cell1"]}
    assert "# the candidate, on trial since Monday" in text and "# one microphone" in text


def test_a_flow_value_and_a_missing_section_are_handled() -> None:
    flow = "model: {path: a.onnx}\nstate_dir: s\n"
    assert yaml.safe_load(with_section(flow, "model", {"path": "b.onnx"})) == {
        "model": {"path": "b.onnx"},
        "state_dir": "s",
    }
    added = with_section("model: {path: a.onnx}\n", "shadow", {"path": "c.onnx"})
    assert yaml.safe_load(added) == {"model": {"path": "a.onnx"}, "shadow": {"path": "c.onnx"}}


def test_write_atomically_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "monitor.yaml"
    target.write_text(CONFIG)
    target.chmod(0o640)
    write_atomically(target, "state_dir: x\n")
    assert target.read_text() == "state_dir: x\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert list(tmp_path.iterdir()) == [target]


def test_a_folder_that_cannot_be_written_refuses_with_the_path_and_changes_nothing(
    tmp_path: Path,
) -> None:
    target = tmp_path / "gone" / "monitor.yaml"  # the folder does not exist: no write can work
    with pytest.raises(ConfigWriteError, match=r"gone/monitor\.yaml: cannot be rewritten"):
        write_atomically(target, "state_dir: x\n")
    assert not target.with_name(target.name + NEW_SUFFIX).exists()
