"""Index a labelled dataset laid out like the real one, and keep a report of every bad file.

Layout (`deploy.dataset_layout`)::

    good_weld/<config_folder>/<run_id>/<run_id>.flac
    defect_data_weld/<config_folder>/<run_id>/<run_id>.flac

The label is the run id's last two digits (00 good_weld, 01 excessive_penetration, ...). The
cheap checks (missing file, unknown label code, header unreadable, wrong rate, shorter than one
window) happen here; the ones that need the samples (corrupt stream, NaN) happen when the file
is decoded once for features (`training.features`) and land in the same `DataReport`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import soundfile as sf

from deploy.audio import libsndfile_reason
from deploy.dataset_layout import AUDIO_SUFFIX, GOOD_CODE, LABEL_CODES, TOP_FOLDERS
from deploy.errors import WeldmonError


class DatasetError(WeldmonError):
    """The dataset root cannot be indexed at all (missing, or no labelled tree in it)."""


@dataclass(frozen=True)
class RunEntry:
    """One labelled recording."""

    run_id: str
    path: Path
    config_folder: str
    top_folder: str
    label_code: str
    duration_s: float

    @property
    def label_name(self) -> str:
        return LABEL_CODES[self.label_code]

    @property
    def is_defect(self) -> bool:
        return self.label_code != GOOD_CODE

    @property
    def binary_label(self) -> int:
        """0 good_weld, 1 defect (the deploy artifact's output label)."""
        return int(self.is_defect)

    @property
    def class_index(self) -> int:
        """Index in the multiclass task (sorted label codes)."""
        return sorted(LABEL_CODES).index(self.label_code)


@dataclass(frozen=True)
class BadFile:
    path: str
    run_id: str
    config_folder: str
    reason: str


@dataclass
class DataReport:
    """What was found, what was excluded and why. Written beside every run."""

    root: str
    n_found: int = 0
    bad: list[BadFile] = field(default_factory=list)

    def exclude(self, entry_or_path: RunEntry | Path, reason: str, config_folder: str = "") -> None:
        if isinstance(entry_or_path, RunEntry):
            e = entry_or_path
            self.bad.append(BadFile(str(e.path), e.run_id, e.config_folder, reason))
        else:
            p = Path(entry_or_path)
            self.bad.append(BadFile(str(p), p.stem, config_folder, reason))

    def as_dict(self) -> dict:
        return {
            "root": self.root,
            "n_found": self.n_found,
            "n_excluded": len(self.bad),
            "excluded": [asdict(b) for b in self.bad],
        }

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / "data_report.json"
        out.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        with (folder / "data_report.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "run_id", "config_folder", "reason"])
            writer.writerows([b.path, b.run_id, b.config_folder, b.reason] for b in self.bad)
        return out


@dataclass
class DatasetIndex:
    root: Path
    entries: list[RunEntry]
    report: DataReport

    def config_folders(self) -> list[str]:
        return sorted({e.config_folder for e in self.entries})


def _check_header(path: Path, sample_rate: int, min_samples: int) -> tuple[float, str | None]:
    """(duration in s, reason it is unusable or None) from the file header alone."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        return 0.0, libsndfile_reason(exc)
    if info.frames <= 0:
        return 0.0, "empty (no audio frames)"
    duration = info.frames / info.samplerate
    if info.samplerate != sample_rate:
        return duration, f"wrong sample rate {info.samplerate} Hz (expected {sample_rate} Hz)"
    if info.frames < min_samples:
        return duration, f"shorter than one window ({info.frames} < {min_samples} samples)"
    return duration, None


def index_dataset(
    root: Path, *, sample_rate: int = 16000, chunk_samples: int = 16000
) -> DatasetIndex:
    """Find every run under `root`; usable ones become entries, the rest report lines.

    Wrong-rate files are excluded rather than resampled: the whole dataset is 16 kHz, so a
    different rate means a different recorder set-up whose audio the model has never heard.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    tops = [root / t for t in TOP_FOLDERS if (root / t).is_dir()]
    if not tops:
        raise DatasetError(f"{root}: neither {TOP_FOLDERS[0]}/ nor {TOP_FOLDERS[1]}/ found")
    report = DataReport(str(root))
    entries: list[RunEntry] = []
    for top in tops:
        for config_dir in sorted(p for p in top.iterdir() if p.is_dir()):
            for run_dir in sorted(p for p in config_dir.iterdir() if p.is_dir()):
                report.n_found += 1
                path = run_dir / f"{run_dir.name}{AUDIO_SUFFIX}"
                code = run_dir.name[-2:]
                if not path.is_file():
                    report.exclude(path, "missing audio file", config_dir.name)
                    continue
                if code not in LABEL_CODES:
                    report.exclude(path, f"unknown label code {code!r}", config_dir.name)
                    continue
                if (code == GOOD_CODE) != (top.name == TOP_FOLDERS[0]):
                    report.exclude(path, f"label code {code} under {top.name}/", config_dir.name)
                    continue
                duration, reason = _check_header(path, sample_rate, chunk_samples)
                if reason is not None:
                    report.exclude(path, reason, config_dir.name)
                    continue
                entries.append(
                    RunEntry(run_dir.name, path, config_dir.name, top.name, code, duration)
                )
    return DatasetIndex(root, entries, report)
