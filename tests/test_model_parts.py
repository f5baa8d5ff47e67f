"""Backbone topology and the top-k MIL pooling rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from deploy import torchscript
from deploy.backbone import WindowClassifier
from deploy.model import decide
from deploy.pooling import topk_count, topk_pool, topk_pool_np
from deploy.windows import cut_windows, mix_channels


def test_backbone_has_about_186k_parameters_like_the_original():
    n = sum(p.numel() for p in WindowClassifier().parameters())
    assert n == 185_698


def test_window_classifier_maps_windows_to_two_logits():
    model = WindowClassifier().eval()
    assert model(torch.randn(4, 16000)).shape == (4, 2)
    assert model(torch.randn(4, 1, 16000)).shape == (4, 2)


def test_original_state_dict_loads_into_our_classifier(compat_artifact):
    original = torchscript.load(str(compat_artifact))
    ours = WindowClassifier().eval()
    ours.load_state_dict(original.base_model.state_dict())
    x = torch.randn(3, 16000)
    torch.testing.assert_close(ours(x), original.base_model(x.unsqueeze(1)))


@pytest.mark.parametrize(
    ("n", "ratio", "k"),
    [(1, 0.05, 1), (19, 0.05, 1), (20, 0.05, 1), (21, 0.05, 2), (38, 0.05, 2), (38, 0.2, 8)],
)
def test_topk_count_is_ceil_ratio_times_n_at_least_one(n, ratio, k):
    assert topk_count(n, ratio) == k


@given(
    probs=st.lists(st.floats(0.0, 1.0, width=32), min_size=1, max_size=80),
    ratio=st.floats(0.01, 1.0),
)
def test_topk_pool_is_the_mean_of_the_k_largest(probs, ratio):
    k = max(1, min(len(probs), math.ceil(ratio * len(probs))))
    expected = sum(sorted(probs, reverse=True)[:k]) / k
    got = float(topk_pool(torch.tensor(probs, dtype=torch.float32), ratio))
    assert got == pytest.approx(expected, abs=1e-6)


def test_topk_pool_passes_gradients_only_to_selected_windows():
    probs = torch.tensor([0.1, 0.9, 0.5, 0.2], requires_grad=True)
    topk_pool(probs, 0.5).backward()
    assert probs.grad.tolist() == [0.0, 0.5, 0.5, 0.0]


@given(
    probs=st.lists(st.floats(0.0, 1.0, width=32), min_size=1, max_size=80),
    ratio=st.floats(0.01, 1.0),
)
def test_numpy_pooling_equals_the_torch_pooling_of_the_artifact(probs, ratio):
    values = np.asarray(probs, dtype=np.float32)
    expected = float(topk_pool(torch.from_numpy(values), ratio))
    # Both average in float32; they sum in different orders, a few float32 ulps apart at most.
    assert topk_pool_np(values, ratio) == pytest.approx(expected, abs=1e-6)


@given(channels=st.integers(1, 4), n=st.integers(0, 5000), chunk=st.integers(1, 700))
def test_window_rules_are_the_same_on_numpy_torch_and_torchscript(channels, n, chunk):
    wave = np.random.default_rng(n).standard_normal((channels, n)).astype(np.float32)
    mixed = mix_channels(wave)
    assert isinstance(mixed, np.ndarray) and mixed.shape == (n,)
    np.testing.assert_array_equal(mixed, mix_channels(torch.from_numpy(wave)).numpy())
    np.testing.assert_array_equal(mixed, SCRIPTED_MIX(torch.from_numpy(wave)).numpy())
    windows = cut_windows(mixed, chunk)
    assert windows.shape == (n // chunk, chunk)
    np.testing.assert_array_equal(windows, cut_windows(torch.from_numpy(mixed), chunk).numpy())
    np.testing.assert_array_equal(windows, SCRIPTED_CUT(torch.from_numpy(mixed), chunk).numpy())


SCRIPTED_MIX = torchscript.script(mix_channels)
SCRIPTED_CUT = torchscript.script(cut_windows)


@given(p=st.floats(0.0, 1.0, width=32), threshold=st.floats(0.0, 1.0))
def test_the_label_rule_compares_in_float32_like_the_artifacts_forward(p, threshold):
    # The scripted forward computes torch.ge(p, threshold) with p a float32 tensor, so the
    # threshold is rounded to float32 first (p = 0.638594388961792 is a defect at threshold
    # 0.6385943956916688, although p < threshold in float64).
    assert decide(p, threshold) == int(torch.ge(torch.tensor(p, dtype=torch.float32), threshold))
    assert decide(0.638594388961792, 0.6385943956916688) == 1
