"""Keep the daemon's resident memory flat over long shifts.

glibc raises its mmap threshold each time a large block is freed (the "dynamic threshold"),
so after the inference thread has met a few batch sizes, tensor buffers of ~0.1-2 MB are
served from the heap and stay resident: the 8-hour soak grew 76 MB after warm-up that way,
bounded but real (docs/benchmarks.md, Soak). Pinning the threshold at 128 KiB (glibc's own
starting value) keeps large buffers in mmap, returned to the kernel when freed: +8 MB over the
same soak. It is the in-process equivalent of MALLOC_MMAP_THRESHOLD_=131072 and works when
the daemon is started by hand, by systemd or by tests alike. No library exposes mallopt, so
this is ctypes; on a libc without mallopt (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's default initial threshold, now fixed

log = structlog.get_logger(__name__)


def pin_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold (disables its dynamic growth); True when it took effect."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    if not ok:
        log.warning("mallopt_failed", parameter="M_MMAP_THRESHOLD", value=threshold_bytes)
    return ok
