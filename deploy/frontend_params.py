"""The front end's parameters, importable without torch (`weldmon model info` on a monitor box
names an artifact's front end; `deploy.frontend` computes it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated

from pydantic import ConfigDict, Field


@dataclass(frozen=True)
class FrontEndParams:
    """Front-end settings; the artifact stores them so a mismatch can be named at load time.
    The bounds apply where a config holds them (training's TrainConfig validates them)."""

    # How pydantic validates these inside a config: unknown keys and NaN/Inf refused.
    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)

    sample_rate: Annotated[int, Field(gt=0)] = 16000  # Hz, the model's input rate
    n_fft: Annotated[int, Field(gt=0)] = 1024  # FFT size in samples (513 frequency bins)
    win_length: Annotated[int, Field(gt=0)] = 640  # analysis window, samples (0.04 s at 16 kHz)
    hop_length: Annotated[int, Field(gt=0)] = 320  # frame hop in samples (0.02 s at 16 kHz)
    n_mels: Annotated[int, Field(gt=0)] = 40  # mel bands
    f_min: Annotated[float, Field(ge=0.0)] = 0.0  # Hz, lowest mel edge
    f_max: Annotated[float, Field(gt=0.0)] = 8000.0  # Hz, highest mel edge (Nyquist at 16 kHz)
    db_floor: float = 1e-10  # power floor before log10, so silence gives -100 dB, not -inf
    norm_eps: float = 1e-6  # added to the std so a constant window does not divide by zero

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a window of `n_samples` (no centring, no padding).

        1 + (16000 - 1024) // 320 = 47 for a 1 s window: torch.stft frames by n_fft, not by
        win_length. The original's notes say 40 x 49, but its artifacts compute 40 x 47; the
        artifacts are the contract.
        """
        return 1 + (n_samples - self.n_fft) // self.hop_length
