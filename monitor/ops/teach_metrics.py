"""The stations' teach-in on /metrics, read at scrape time (`monitor.teach.TeachIn.snapshot`):

- ``weldmon_teach_in_state{station}``: 0 idle, 1 collecting, 2 taught;
- ``weldmon_teach_in_threshold{station}``: the taught decision threshold (taught stations
  only: the others are judged by the artifact's or the config's);
- ``weldmon_teach_in_welds{station}``: welds the running teach-in holds (0 when none runs);
- ``weldmon_teach_in_commands_total{outcome}``: teach commands applied and refused;
- ``weldmon_teach_in_drift{station}``: how far the taught station's recent good welds moved
  from its taught reference, as a share of the way to the taught threshold (taught stations
  with `teach_in.drift_min_welds` good welds since; monitor/teach/drift.py);
- ``weldmon_teach_in_recalibrate{station}``: 1 while that share is past `teach_in.drift_share`
  (the `recalibrate` error was published), else 0 (every station, from start-up).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from monitor.ops.metrics import NAMESPACE

Snapshot = Mapping[str, tuple[int, float, int]]  # station -> (state, threshold or NaN, welds)
DriftSnapshot = Mapping[str, tuple[float, int]]  # station -> (drift share or NaN, recalibrate)


class TeachCollector(Collector):
    """Reads `snapshot()` at each scrape (HTTP thread: it must only read numbers)."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        commands: Callable[[], Mapping[str, int]],
        drift: Callable[[], DriftSnapshot] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._commands = commands
        self._drift = drift

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The gauges, one series per station, and the commands counter."""
        values = dict(self._snapshot())
        state = GaugeMetricFamily(
            f"{NAMESPACE}_teach_in_state",
            "teach-in state: 0 idle, 1 collecting, 2 taught",
            labels=["station"],
        )
        threshold = GaugeMetricFamily(
            f"{NAMESPACE}_teach_in_threshold",
            "the station's taught decision threshold",
            labels=["station"],
        )
        welds = GaugeMetricFamily(
            f"{NAMESPACE}_teach_in_welds",
            "welds the station's running teach-in holds",
            labels=["station"],
        )
        for station, (code, value, count) in sorted(values.items()):
            state.add_metric([station], code)
            if value == value:  # NaN: not taught
                threshold.add_metric([station], value)
            welds.add_metric([station], count)
        yield from (state, threshold, welds)
        commands = CounterMetricFamily(
            f"{NAMESPACE}_teach_in_commands", "teach commands by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(self._commands().items()):
            commands.add_metric([outcome], count)
        yield commands
        if self._drift is not None:
            yield from _drift_gauges(dict(self._drift()))


def _drift_gauges(values: dict[str, tuple[float, int]]) -> Iterator[GaugeMetricFamily]:
    drift = GaugeMetricFamily(
        f"{NAMESPACE}_teach_in_drift",
        "how far the taught station's recent good welds moved from its taught reference, "
        "as a share of the way to the taught threshold",
        labels=["station"],
    )
    recalibrate = GaugeMetricFamily(
        f"{NAMESPACE}_teach_in_recalibrate",
        "1 while the taught station's good welds drifted past teach_in.drift_share",
        labels=["station"],
    )
    for station, (share, alarmed) in sorted(values.items()):
        if share == share:  # NaN: not taught, or too few good welds since
            drift.add_metric([station], share)
        recalibrate.add_metric([station], alarmed)
    yield from (drift, recalibrate)


def register_teach_metrics(
    registry: CollectorRegistry,
    snapshot: Callable[[], Snapshot],
    commands: Callable[[], Mapping[str, int]],
    drift: Callable[[], DriftSnapshot] | None = None,
) -> None:
    """Export the teach-in gauges and counter (and the drift gauges) from `registry`."""
    registry.register(TeachCollector(snapshot, commands, drift))
