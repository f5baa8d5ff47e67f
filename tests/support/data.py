"""The real recordings and the compat artifact, read from ../shared (never copied into git).

Locations can be overridden with WELDMON_WELD_AUDIO and WELDMON_COMPAT_DIR. Locally a missing
folder skips the tests that need it; with CI=true it fails them loudly instead.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
COMPAT_SHA256 = "9fa888fd5505fb57c8c10ffe5d76129779659e3bff0531a420d717f81f9bc83f"


def weld_audio_root() -> Path:
    return Path(os.environ.get("WELDMON_WELD_AUDIO", SHARED / "weld-audio"))


def compat_artifact_path() -> Path:
    root = Path(os.environ.get("WELDMON_COMPAT_DIR", SHARED / "compat"))
    return root / "seed_format_deploy_single_label.pt"


def _require(path: Path, what: str) -> Path:
    if path.exists():
        return path
    message = f"{what} not found at {path}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: real data is required, not optional)")
    pytest.skip(message)


@dataclass(frozen=True)
class Recording:
    run_id: str
    label_code: str
    label: str
    config_folder: str
    flac: Path
    duration_s: float

    @property
    def sensor_csv(self) -> Path:
        return self.flac.with_suffix(".csv")

    @property
    def is_defect(self) -> bool:
        return self.label_code != "00"


@pytest.fixture(scope="session")
def weld_audio_dir() -> Path:
    """Root of the real recordings (laid out like the full dataset)."""
    return _require(weld_audio_root() / "manifest.csv", "real recordings (manifest.csv)").parent


@pytest.fixture(scope="session")
def recordings(weld_audio_dir: Path) -> list[Recording]:
    """Every real recording listed in the manifest."""
    with (weld_audio_dir / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [
        Recording(
            run_id=r["run_id"],
            label_code=r["label_code"],
            label=r["label"],
            config_folder=r["config_folder"],
            flac=weld_audio_dir / r["flac"],
            duration_s=float(r["duration_s"]),
        )
        for r in rows
    ]


@pytest.fixture(scope="session")
def compat_artifact() -> Path:
    """The original pipeline's seed-format deploy artifact (random weights, threshold 0.705)."""
    return _require(compat_artifact_path(), "compat artifact")


def link_subset(
    recordings: list[Recording], root: Path, folders_per_class: int, runs_per_class: int
) -> list[Recording]:
    """Symlink the first `folders_per_class` config folders of each class (at most
    `runs_per_class` runs of each class) into `root`, laid out like the dataset: a small real
    set for tests on two shared cores. Returns the recordings linked."""
    chosen: list[Recording] = []
    for defect in (False, True):
        folders = sorted({r.config_folder for r in recordings if r.is_defect == defect})
        keep = set(folders[:folders_per_class])
        chosen += [r for r in recordings if r.config_folder in keep][:runs_per_class]
    for r in chosen:
        top = "defect_data_weld" if r.is_defect else "good_weld"
        link = root / top / r.config_folder / r.run_id / r.flac.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(r.flac)
    return chosen
