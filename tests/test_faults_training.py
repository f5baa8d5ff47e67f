"""`weldmon evaluate`, `train` and `export` meet a bad model, a bad data root, a binary split
file, an unwritable output and a checkpoint full of Python objects: one message each on
stderr and exit code 2 (nothing was done), as the README promises; never a traceback, never
torch's advice to load with weights_only=False. The commands run as subprocesses on real
files.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.daemon import REPO_ROOT
from tests.test_faults_deploy import rogue

CLI_TIMEOUT_S = 600.0
TRAIN_EXAMPLE = REPO_ROOT / "configs" / "train.example.yaml"


class NotATensor:
    """Any Python object: a checkpoint holding one cannot be loaded without unpickling."""


def weldmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )


def assert_usage_error(done: subprocess.CompletedProcess[str], command: str, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"weldmon {command}:" in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


@pytest.mark.real_data
def test_evaluate_refuses_a_model_giving_nan_before_judging_any_file(
    tmp_path: Path, weld_audio_dir: Path
) -> None:
    done = weldmon(
        "evaluate", "--model", str(rogue(tmp_path, "nan")), "--data-root", str(weld_audio_dir),
        "--report", str(tmp_path / "report"),
    )  # fmt: skip
    assert_usage_error(done, "evaluate", "invalid probabilities")
    assert not (tmp_path / "report").exists()


def test_evaluate_refuses_a_missing_data_root_and_a_binary_split(tmp_path: Path) -> None:
    model = str(rogue(tmp_path, "ok"))
    missing = weldmon(
        "evaluate", "--model", model, "--data-root", str(tmp_path / "nowhere"),
        "--report", str(tmp_path / "report"),
    )  # fmt: skip
    assert_usage_error(missing, "evaluate", "--data-root", "not a directory")
    binary = tmp_path / "split.json"
    binary.write_bytes(bytes(range(256)) * 4)
    split = weldmon(
        "evaluate", "--model", model, "--data-root", str(tmp_path), "--split", str(binary),
        "--report", str(tmp_path / "report"),
    )  # fmt: skip
    assert_usage_error(split, "evaluate", str(binary), "binary")


def test_train_refuses_a_missing_data_root(tmp_path: Path) -> None:
    done = weldmon(
        "train", "--config", str(TRAIN_EXAMPLE), "--data-root", str(tmp_path / "nowhere"),
        "--run-dir", str(tmp_path / "run"), "--no-progress",
    )  # fmt: skip
    assert_usage_error(done, "train", "not a directory")


def test_export_checks_its_output_before_anything_and_never_advises_weights_only_false(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    unwritable = weldmon(
        "export", "--checkpoint", str(tmp_path / "any.pt"),
        "--output", str(blocker / "deploy.pt"),
    )  # fmt: skip
    assert_usage_error(unwritable, "export", "--output", "cannot create")

    buffer = io.BytesIO()
    torch.save({"format": "anything", "state": NotATensor()}, buffer)
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(buffer.getvalue())
    refused = weldmon("export", "--checkpoint", str(pickled), "--output", str(tmp_path / "d.pt"))
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    assert "weights_only" not in refused.stderr and "two options" not in refused.stderr
    assert "refused unread" in refused.stderr
