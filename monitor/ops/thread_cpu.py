"""CPU seconds per daemon thread, read from /proc when /metrics is scraped.

Which part of the daemon costs what (issue 21): the event loop (pipeline, MQTT, status), the
capture thread, the PortAudio callback (a foreign thread Python knows as ``Dummy-N``), the
inference worker, the HTTP server, and the rest of the process (libpulse's client thread,
ONNX Runtime's pool, threads Python does not know). Read at scrape time, so it costs nothing
between scrapes; Linux only (elsewhere the metric is empty).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# A thread's Python name, numbers stripped, to the part it stands for.
PARTS = {
    "MainThread": "loop",
    "weldmon-capture": "capture",
    "weldmon-inference": "inference",
    "weldmon-http": "http",
    "Dummy": "audio_callback",
}


def part_of(thread_name: str) -> str:
    """The part a thread counts under: ``Dummy-3`` -> ``audio_callback``, an unknown name
    -> its own name without trailing numbers."""
    base = re.sub(r"[-_ ]?\d+$", "", thread_name)
    return PARTS.get(base, base or "unnamed")


def _cpu_s(stat: Path) -> float | None:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # the thread ended between listing and reading
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime + stime


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) by part, ``other`` = the process minus the named threads;
    empty where /proc is missing."""
    own = _cpu_s(Path("/proc/self/stat"))
    if own is None:
        return {}
    parts: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.native_id is None:
            continue
        cpu = _cpu_s(Path(f"/proc/self/task/{thread.native_id}/stat"))
        if cpu is not None:
            name = part_of(thread.name)
            parts[name] = parts.get(name, 0.0) + cpu
    parts["other"] = max(0.0, own - sum(parts.values()))
    return parts


class ThreadCpuCollector(Collector):
    """``weldmon_thread_cpu_seconds_total{part}``, computed when scraped."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "weldmon_thread_cpu_seconds",
            "CPU seconds (user + system) spent by each part of the daemon since it started",
            labels=["part"],
        )
        for part, seconds in sorted(thread_cpu_seconds().items()):
            family.add_metric([part], seconds)
        yield family
