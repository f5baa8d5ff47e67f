"""The log-mel front end against the formulas, derived independently with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy import torchscript
from deploy.frontend import FrontEndParams, LogMel, folded_dft_bases

P = FrontEndParams()


def numpy_htk_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sr: int):
    """Textbook HTK triangles: mel = 2595 log10(1 + f/700), peaks at equally spaced mels."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_freqs)
    fb = np.zeros((n_freqs, n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        fb[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
    return fb, edges


def numpy_logmel(window: np.ndarray) -> np.ndarray:
    """The whole front end for one window, with numpy's FFT and an explicit Hann window."""
    n = np.arange(P.win_length)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / P.win_length)  # periodic Hann
    frame_win = np.zeros(P.n_fft)
    left = (P.n_fft - P.win_length) // 2  # the short window sits centred in the FFT frame
    frame_win[left : left + P.win_length] = hann
    n_frames = 1 + (len(window) - P.n_fft) // P.hop_length
    fb, _ = numpy_htk_filterbank(P.n_fft // 2 + 1, P.f_min, P.f_max, P.n_mels, P.sample_rate)
    frames = np.stack(
        [window[i * P.hop_length : i * P.hop_length + P.n_fft] * frame_win for i in range(n_frames)]
    )
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # [frames, 513]
    mel = power @ fb  # [frames, 40]
    db = 10.0 * np.log10(np.maximum(mel, P.db_floor)).T  # [40, frames]
    return (db - db.mean()) / (db.std(ddof=1) + P.norm_eps)


def test_filterbank_matches_the_htk_formula():
    ours = LogMel().fb.numpy()
    expected, _ = numpy_htk_filterbank(513, 0.0, 8000.0, 40, 16000)
    assert ours.shape == (513, 40)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_filters_are_not_area_normalised_so_each_peak_is_near_one():
    fb = LogMel().fb.numpy()
    # Peaks fall between FFT bins, so the sampled maximum of each triangle is below 1 but the
    # wide upper triangles get close to it; with Slaney normalisation they would be ~0.001.
    assert fb.max() <= 1.0
    assert fb[:, 20:].max(axis=0).min() > 0.9


def test_one_second_window_gives_a_40_by_47_map_like_the_original_artifacts():
    out = LogMel()(torch.randn(3, 16000))
    assert out.shape == (3, 1, 40, 47)
    assert P.n_frames(16000) == 47 == 1 + (16000 - 1024) // 320


def test_full_front_end_matches_numpy_reference_on_noise():
    rng = np.random.default_rng(1)
    window = rng.standard_normal(16000).astype(np.float32) * 0.1
    ours = LogMel()(torch.from_numpy(window)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, numpy_logmel(window.astype(np.float64)), atol=2e-3)


@pytest.mark.parametrize("freq_hz", [300.0, 1000.0, 2500.0, 6000.0])
def test_pure_tone_lands_in_the_band_whose_centre_is_nearest(freq_hz: float):
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    out = LogMel()(torch.from_numpy(tone)[None])[0, 0].numpy()
    loudest_band = int(out.mean(axis=1).argmax())
    _, edges = numpy_htk_filterbank(513, 0.0, 8000.0, 40, 16000)
    centres = edges[1:-1]
    assert abs(loudest_band - int(np.abs(centres - freq_hz).argmin())) <= 1


def test_silence_hits_the_db_floor_and_normalisation_does_not_divide_by_zero():
    module = LogMel()
    x = torch.zeros(1, 16000)
    spec = torch.stft(x, 1024, 320, 640, module.win, center=False, return_complex=True).abs() ** 2
    mel = (spec.transpose(-1, -2) @ module.fb).transpose(-1, -2)
    db = 10 * torch.log10(torch.clamp(mel, min=1e-10))
    assert torch.all(db == -100.0)  # 10 * log10(1e-10)
    out = module(x)
    assert torch.all(torch.isfinite(out)) and torch.all(out == 0.0)  # (db - mean) / (0 + eps)


def test_each_window_is_normalised_by_its_own_mean_and_unbiased_std():
    rng = np.random.default_rng(2)
    quiet = rng.standard_normal(16000) * 0.001
    loud = rng.standard_normal(16000) * 1.0
    out = LogMel()(torch.tensor(np.stack([quiet, loud]), dtype=torch.float32))
    for i in range(2):
        m = out[i, 0]
        assert abs(float(m.mean())) < 1e-4
        assert abs(float(m.std(unbiased=True)) - 1.0) < 1e-3
    # Gain is normalised away: a 60 dB louder copy of the same noise gives the same map.
    same = LogMel()(torch.tensor(np.stack([quiet, quiet * 1000]), dtype=torch.float32))
    torch.testing.assert_close(same[0], same[1], atol=1e-3, rtol=0)


def test_front_end_scripts_into_torchscript():
    module = LogMel()
    scripted = torchscript.script(module)
    x = torch.randn(2, 16000)
    torch.testing.assert_close(scripted(x), module(x))


def numpy_power(x: np.ndarray, p: FrontEndParams, window: np.ndarray) -> np.ndarray:
    """|rfft|^2 of every frame in float64: the window centred in the n_fft frame, no padding."""
    left = (p.n_fft - p.win_length) // 2
    frame_win = np.zeros(p.n_fft)
    frame_win[left : left + p.win_length] = window
    n_frames = p.n_frames(x.shape[-1])
    frames = np.stack(
        [x[:, i * p.hop_length : i * p.hop_length + p.n_fft] * frame_win for i in range(n_frames)],
        axis=1,
    )
    return np.transpose(np.abs(np.fft.rfft(frames, axis=-1)) ** 2, (0, 2, 1))  # [T, bins, F]


# The contract's parameters, plus odd window lengths, an odd padding and a window filling the
# frame: the folded DFT must hold for every front end a training config can ask for.
PARAMS = [
    P,
    FrontEndParams(n_fft=512, win_length=401, hop_length=160),
    FrontEndParams(n_fft=1024, win_length=1024, hop_length=256),
    FrontEndParams(n_fft=256, win_length=255, hop_length=100),
]


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p.n_fft}-{p.win_length}")
def test_real_dft_power_equals_the_formula_and_torch_stft_to_float_rounding(params):
    module = LogMel(params)
    x = np.random.default_rng(4).standard_normal((3, 16000)).astype(np.float32) * 0.1
    exact = numpy_power(x.astype(np.float64), params, module.win.double().numpy())
    ours = module.power(torch.from_numpy(x)).double().numpy()
    stft = (
        torch.stft(
            torch.from_numpy(x),
            params.n_fft,
            params.hop_length,
            params.win_length,
            module.win,
            center=False,
            return_complex=True,
        )
        .abs()
        .pow(2)
        .double()
        .numpy()
    )
    assert ours.shape == exact.shape == stft.shape
    # Errors relative to each frame's strongest bin: float32 dot products of ~L/2 terms give
    # ~1.5e-6 (torch.stft's FFT ~4e-7), far below anything the log-mel map can show.
    peak = exact.max(axis=1, keepdims=True)
    assert np.abs(ours - exact).max() / peak.min() < 1e-3  # sanity: peaks are not tiny
    assert (np.abs(ours - exact) / peak).max() < 5e-6
    assert (np.abs(ours - stft) / peak).max() < 5e-6


def test_log_mel_of_the_real_dft_equals_the_one_of_torch_stft():
    module = LogMel()
    x = torch.randn(4, 16000) * 0.05
    spec = torch.stft(x, 1024, 320, 640, module.win, center=False, return_complex=True)
    mel = torch.matmul(spec.abs().pow(2).transpose(-1, -2), module.fb).transpose(-1, -2)
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    expected = (db - db.mean(dim=(1, 2), keepdim=True)) / (db.std(dim=(1, 2), keepdim=True) + 1e-6)
    torch.testing.assert_close(module(x)[:, 0], expected, atol=1e-4, rtol=0)


def test_state_dict_is_the_window_and_the_filterbank_only():
    module = LogMel()
    assert set(module.state_dict()) == {"win", "fb"}  # what the original's artifacts carry


def test_loading_a_state_dict_rebuilds_the_dft_bases_from_its_window():
    source = LogMel(FrontEndParams(win_length=600))
    target = LogMel(FrontEndParams(win_length=600))
    with torch.no_grad():
        target.cos_basis.zero_()
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.cos_basis, source.cos_basis, rtol=0, atol=0)


def test_a_window_that_is_not_symmetric_is_refused():
    with pytest.raises(ValueError, match=r"w\[0\] = 0 and w\[m\] = w\[L - m\]"):
        folded_dft_bases(torch.linspace(0.0, 1.0, 64), 128)


def test_a_window_shorter_than_n_fft_is_refused():
    with pytest.raises(ValueError, match="shorter than n_fft"):
        LogMel()(torch.zeros(1, 1000))
