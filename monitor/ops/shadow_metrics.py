"""The shadow model's cost and counts on /metrics, read at scrape time.

Separate from the production model's series on purpose: the budget question ("does the box
still keep up with a candidate in shadow?") is answered by comparing
``weldmon_shadow_cpu_seconds_total`` with ``weldmon_inference_cpu_seconds_total`` (both the
CPU time of their inference threads, all cores they used), and the shadow's skipped windows
say when it had to give way. Every series is exported from the start (0 without a shadow).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from monitor.ops.metrics import NAMESPACE

# name (without namespace and _total) -> help; each a monotonic total of the daemon's life
SHADOW_TOTALS = {
    "shadow_cpu_seconds": "CPU seconds of the shadow model's inference threads",
    "shadow_windows": "windows handed to the shadow model",
    "shadow_windows_skipped": "windows the shadow model skipped: its queue was full (load)",
    "shadow_windows_failed": "shadow windows whose inference raised or timed out",
    "shadow_results": "shadow verdicts made",
    "shadow_results_lost": "shadow verdicts the broker did not take (never retried)",
    "inference_cpu_seconds": "CPU seconds of the production model's inference threads",
}


class ShadowCollector(Collector):
    """Reads `totals()` (keys of `SHADOW_TOTALS`, plus ``shadow_loaded`` 0/1) at each scrape;
    called on the HTTP thread, so `totals` must only read numbers."""

    def __init__(self, totals: Callable[[], Mapping[str, float]]) -> None:
        self._totals = totals

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """One counter per `SHADOW_TOTALS` entry and the ``shadow_loaded`` gauge."""
        values = self._totals()
        for name, doc in SHADOW_TOTALS.items():
            yield CounterMetricFamily(f"{NAMESPACE}_{name}", doc, value=values.get(name, 0.0))
        loaded = float(values.get("shadow_loaded", 0.0))
        yield GaugeMetricFamily(
            f"{NAMESPACE}_shadow_loaded", "1 while a shadow model is loaded", value=loaded
        )


def register_shadow_metrics(
    registry: CollectorRegistry, totals: Callable[[], Mapping[str, float]]
) -> None:
    """Export the shadow series from `registry`."""
    registry.register(ShadowCollector(totals))
