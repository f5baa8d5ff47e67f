"""CPU seconds per daemon thread (monitor/ops/thread_cpu.py), read from the real /proc."""

from __future__ import annotations

import threading
import time

from prometheus_client import generate_latest

from monitor.ops.metrics import Metrics
from monitor.ops.thread_cpu import part_of, thread_cpu_seconds

BURN_S = 0.3


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_threads_are_named_by_the_part_they_stand_for() -> None:
    assert part_of("MainThread") == "loop"
    assert part_of("weldmon-capture") == "capture"
    assert part_of("Dummy-3") == "audio_callback"  # PortAudio's thread, as Python sees it
    assert part_of("weldmon-inference") == "inference"
    assert part_of("asyncio_0") == "asyncio"


def test_a_thread_that_burns_cpu_is_charged_to_its_part_and_not_to_another() -> None:
    before = thread_cpu_seconds()
    worker = threading.Thread(target=_burn, args=(BURN_S,), name="weldmon-capture")
    worker.start()
    seen: dict[str, float] = {}
    while worker.is_alive():  # read while it lives: a finished thread leaves the listing
        seen = thread_cpu_seconds()
        time.sleep(0.02)
    worker.join()
    assert seen["capture"] - before.get("capture", 0.0) >= BURN_S * 0.5
    assert seen["loop"] - before["loop"] < BURN_S  # this thread mostly slept meanwhile


def test_the_metric_is_served_with_every_part() -> None:
    text = generate_latest(Metrics().registry).decode()
    assert 'weldmon_thread_cpu_seconds_total{part="loop"}' in text
    assert 'weldmon_thread_cpu_seconds_total{part="other"}' in text
