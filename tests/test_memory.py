"""The daemon pins glibc's mmap threshold so long shifts keep a flat resident size."""

from __future__ import annotations

import platform

import pytest

from monitor.ops.memory import pin_mmap_threshold


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_mmap_threshold_can_be_pinned_on_glibc():
    assert pin_mmap_threshold() is True
