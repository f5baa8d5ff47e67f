"""The front end's parameters, importable without torch (`weldmon model info` on a monitor box
names an artifact's front end; `deploy.frontend` computes it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FrontEndParams:
    """Front-end settings; the artifact stores them so a mismatch can be named at load time."""

    sample_rate: int = 16000  # Hz, the model's input rate
    n_fft: int = 1024  # FFT size in samples (513 frequency bins)
    win_length: int = 640  # analysis window in samples (0.04 s at 16 kHz)
    hop_length: int = 320  # frame hop in samples (0.02 s at 16 kHz)
    n_mels: int = 40  # mel bands
    f_min: float = 0.0  # Hz, lowest mel edge
    f_max: float = 8000.0  # Hz, highest mel edge (Nyquist at 16 kHz)
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
