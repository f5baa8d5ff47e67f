"""Mode A (whole recording -> one label) and mode B (one window -> one label)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from deploy.audio import Recording, read_recording
from deploy.errors import AudioError
from deploy.loader import DeployModel
from deploy.windows import cut_windows, mix_channels


def _base_record(model: DeployModel, rec: Recording, mode: str) -> dict[str, Any]:
    return {
        "file": str(rec.path),
        "mode": mode,
        "sample_rate": rec.sample_rate,
        "source_sample_rate": rec.source_rate,
        "resampled": rec.resampled,
        "channels": rec.channels,
        "duration_s": round(rec.duration_s, 6),
        "threshold": model.threshold,
        "model_sha256": model.sha256,
        "backend": model.backend,
    }


def window_start_sample(model: DeployModel, rec: Recording, start_s: float) -> int:
    """Sample index of a window starting at `start_s`; the window must lie inside the audio."""
    if not math.isfinite(start_s) or start_s < 0:
        raise AudioError(f"{rec.path}: window start {start_s} s is not a time >= 0")
    start = round(start_s * model.sample_rate)
    if start + model.chunk_samples > rec.samples.shape[1]:
        raise AudioError(
            f"{rec.path}: a {model.chunk_samples / model.sample_rate:g} s window at {start_s:g} s "
            f"ends after the audio ({rec.duration_s:.3f} s)"
        )
    return start


def predict_recording(model: DeployModel, rec: Recording) -> dict[str, Any]:
    """Mode A: every whole window from the start, top-k pooled."""
    verdict = model.predict(rec.samples)
    out = _base_record(model, rec, "recording")
    out.update(
        label=verdict.label,
        label_name=verdict.label_name,
        p_defect=verdict.p_defect,
        n_windows=verdict.n_windows,
        window_p_max=float(verdict.window_probs.max()),
    )
    return out


def predict_window(model: DeployModel, rec: Recording, start_s: float) -> dict[str, Any]:
    """Mode B: one window at `start_s`, judged as a bag of one (what the artifact does when
    given exactly one window)."""
    start = window_start_sample(model, rec, start_s)
    mono = mix_channels(rec.samples)[start : start + model.chunk_samples]
    verdict = model.judge(model.window_probs(cut_windows(mono, model.chunk_samples)))
    out = _base_record(model, rec, "window")
    out.update(
        window_start_s=start / model.sample_rate,
        label=verdict.label,
        label_name=verdict.label_name,
        p_defect=verdict.p_defect,
        n_windows=1,
    )
    return out


def predict_file(
    model: DeployModel, path: str | Path, window_start_s: float | None
) -> dict[str, Any]:
    """Decode `path` at the model's rate and run mode A, or mode B when a start is given."""
    rec = read_recording(path, model.sample_rate)
    if window_start_s is None:
        return predict_recording(model, rec)
    return predict_window(model, rec, window_start_s)
