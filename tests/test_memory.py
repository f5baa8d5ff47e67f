"""The daemon pins glibc's mmap threshold so long shifts keep a flat resident size.

Each check runs in a fresh interpreter (the threshold is process-wide and only moves up), with
the real allocator: a large buffer is freed once, which raises glibc's dynamic threshold, and
then rounds of 1-3 MB buffers (the size of the inference thread's tensors) are allocated,
touched and freed under a small live buffer. With the pin they go back to the kernel and the
resident size stays flat round after round; without it they stay on the heap.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from monitor.ops.memory import pin_mmap_threshold

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 4
FLAT_MB = 5.0  # resident growth over the rounds that still counts as flat
UNPINNED_GROWTH_MB = 30.0  # what the same rounds keep resident without the pin (~60 MB here)
PROBE = textwrap.dedent(
    f"""
    import json, sys
    import numpy as np
    from monitor.ops.memory import pin_mmap_threshold

    def resident_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    if sys.argv[1] == "pin":
        assert pin_mmap_threshold()
    mb = 1024 * 1024
    big = np.ones(4 * mb // 8)
    del big  # a 4 MB block freed: glibc's dynamic threshold rises above the buffers below
    sizes = [resident_mb()]
    for _ in range({ROUNDS}):
        buffers = [np.ones((1 + i % 3) * mb // 8) for i in range(30)]
        live = np.ones(2048)  # a small buffer allocated after them stays in use
        del buffers
        sizes.append(resident_mb())
        del live
    print(json.dumps(sizes))
    """
)

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def resident_sizes(pin: bool) -> list[float]:
    """VmRSS (MB) before and after each round, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "pin" if pin else "off"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=REPO,
    )
    return json.loads(done.stdout)


@glibc_only
def test_mmap_threshold_can_be_pinned_on_glibc():
    assert pin_mmap_threshold() is True


@glibc_only
def test_pinned_threshold_keeps_the_resident_size_flat_while_large_buffers_come_and_go():
    sizes = resident_sizes(pin=True)
    assert len(sizes) == ROUNDS + 1
    assert max(sizes) - sizes[0] < FLAT_MB, sizes


@glibc_only
def test_without_the_pin_the_same_buffers_stay_resident():
    # The control: the effect the pin removes is real on this allocator, so the flat
    # result above is the pin's doing.
    sizes = resident_sizes(pin=False)
    assert sizes[-1] - sizes[0] > UNPINNED_GROWTH_MB, sizes
