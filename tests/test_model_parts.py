"""Backbone topology and the top-k MIL pooling rule."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from deploy import torchscript
from deploy.backbone import WindowClassifier
from deploy.pooling import topk_count, topk_pool


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
