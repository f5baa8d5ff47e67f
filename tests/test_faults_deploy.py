"""`weldmon predict`, `scan` and `replay` meet bad arguments and bad artifacts: each must end
with one message on stderr and exit code 2 (nothing was done), never a traceback, never
invalid JSON, never a verdict from a model that does not give probabilities.

The bad artifacts are real TorchScript files in the original pipeline's layout (contract
attributes, a `window_probs` method) whose outputs are wrong on purpose; the commands run as
subprocesses on real recordings.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from deploy import torchscript
from tests.support.artifacts import export_untrained
from tests.support.daemon import REPO_ROOT
from tests.support.syscall_refusals import require_tool

CLI_TIMEOUT_S = 300.0
PREDICT = [sys.executable, "-m", "weldmon.cli", "predict"]


class RogueArtifact(nn.Module):
    """The original's artifact layout with a `window_probs` that misbehaves by `mode`:
    ``nan`` always, ``nan_on_loud`` only on windows louder than the self-test's noise,
    ``shape`` [T, 2] instead of [T]; ``ok`` gives 0.5."""

    def __init__(self, mode: str, chunk_samples: int = 16000) -> None:
        super().__init__()
        self.chunk_samples = chunk_samples
        self.defect_idx = 1
        self.eval_pool_ratio = 0.05
        self.threshold = 0.5
        self.base_model = nn.Identity()
        self.mode = mode

    @torch.jit.export
    def window_probs(self, windows: torch.Tensor) -> torch.Tensor:
        n = windows.shape[0]
        if self.mode == "nan":
            return torch.full([n], float("nan"))
        if self.mode == "nan_on_loud":
            loud = windows.abs().amax(dim=1) > 0.1
            return torch.where(loud, torch.full([n], float("nan")), torch.full([n], 0.5))
        if self.mode == "shape":
            return torch.full([n, 2], 0.5)
        return torch.full([n], 0.5)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"label": torch.tensor(0), "p_defect": torch.tensor(0.5)}


def rogue(tmp_path: Path, mode: str, chunk_samples: int = 16000) -> Path:
    path = tmp_path / f"rogue-{mode}-{chunk_samples}.pt"
    torchscript.save(torchscript.script(RogueArtifact(mode, chunk_samples)), str(path))
    return path


def weldmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weldmon.cli", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )


def assert_refused(done: subprocess.CompletedProcess[str], command: str, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stdout == ""
    assert f"weldmon {command}:" in done.stderr or "error:" in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_untrained(tmp_path_factory.mktemp("deploy-faults")).path


@pytest.fixture
def flac(recordings: list) -> str:
    return str(recordings[4].flac)


@pytest.mark.real_data
@pytest.mark.parametrize("start", ["nan", "inf", "-inf"])
def test_predict_refuses_a_non_finite_window_start(artifact: Path, flac: str, start: str) -> None:
    done = weldmon("predict", "--model", str(artifact), flac, f"--window-start={start}")
    assert_refused(done, "predict", "--window-start")


@pytest.mark.real_data
def test_scan_refuses_an_infinite_offset(artifact: Path, flac: str, tmp_path: Path) -> None:
    done = weldmon(
        "scan", "--model", str(artifact), "--out", str(tmp_path), "--offsets", "0,inf", flac
    )
    assert_refused(done, "scan", "--offsets")


@pytest.mark.real_data
def test_scan_refuses_an_out_that_is_a_file_before_it_scans(
    artifact: Path, flac: str, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    out.write_text("someone's file\n")
    done = weldmon("scan", "--model", str(artifact), "--out", str(out), "--no-progress", flac)
    assert_refused(done, "scan", str(out), "is a file")
    assert "scanned" not in done.stderr, "refused before the scan, not after it"
    assert out.read_text() == "someone's file\n"


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("nan", ("test inference gave invalid probabilities",)),
        ("shape", ("returned shape (2, 2)",)),
        ("nan_on_loud", ("invalid probabilities for window",)),
    ],
)
def test_predict_and_scan_refuse_a_model_that_gives_no_probabilities(
    tmp_path: Path, flac: str, mode: str, words: tuple[str, ...]
) -> None:
    model = rogue(tmp_path, mode)
    predicted = weldmon("predict", "--model", str(model), flac)
    assert_refused(predicted, "predict", *words)
    scanned = weldmon(
        "scan", "--model", str(model), "--out", str(tmp_path / "out"), "--no-progress", flac
    )
    assert_refused(scanned, "scan", *words)


@pytest.mark.real_data
def test_a_model_that_gives_probabilities_still_judges(tmp_path: Path, flac: str) -> None:
    done = weldmon("predict", "--model", str(rogue(tmp_path, "ok")), flac)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert math.isfinite(record["p_defect"]) and record["label_name"] == "defect"


@pytest.mark.real_data
def test_a_window_of_2_to_the_40_samples_is_refused_at_load_not_allocated(
    tmp_path: Path, flac: str
) -> None:
    model = rogue(tmp_path, "ok", chunk_samples=2**40)
    done = weldmon("replay", "--model", str(model), "--no-progress", flac)
    assert_refused(done, "replay", "chunk_samples")


@pytest.mark.real_data
def test_the_artifact_is_read_once_so_the_hashed_bytes_are_the_loaded_bytes(
    artifact: Path, flac: str, tmp_path: Path
) -> None:
    strace = require_tool("strace", "strace")
    trace = tmp_path / "open.log"
    digest = (artifact.parent / f"{artifact.name}.sha256").read_text().split()[0]
    traced = [strace, "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(trace)]
    done = subprocess.run(
        [*traced, *PREDICT, "--model", str(artifact), "--sha256", digest, flac],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    opens = [
        line
        for line in trace.read_text().splitlines()
        if f'"{artifact}"' in line and "= -1" not in line
    ]
    assert len(opens) == 1, opens
