"""The daemon's Prometheus metrics, on a registry of their own.

Each `Metrics` owns a fresh `CollectorRegistry` rather than prometheus_client's global one, so
tests, benches and several daemons in one process never collide on metric names. The health
server (`monitor.ops.health`) serves ``/metrics`` from that registry.

Who updates what: the event loop calls the methods below as things happen (a block arrived, a
window was judged, a weld ended); counts the components already keep as running totals
(capture overflows, publisher reconnects, outbox drops) are copied in with `advance_to`;
gauges are `set` by the daemon, or bound to a cheap reader with ``gauge.set_function(...)``
so a scrape sees the value of that moment. prometheus_client metrics are thread-safe, so the
inference thread may record too.

Names follow the Prometheus conventions: ``weldmon_`` prefix, base units (seconds, frames),
``_total`` on counters (added by the client library).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from monitor.events import DegradedReason, WeldResult
from monitor.ops.thread_cpu import ThreadCpuCollector
from weldmon import __version__

NAMESPACE = "weldmon"
# Seconds from a window's submission to its probability, queue wait included: a forward pass
# of one 1 s window takes milliseconds on a small CPU (docs/benchmarks.md, "inference
# batching"); seconds mean the worker fell behind.
INFERENCE_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# inbound MQTT messages the daemon parses
MALFORMED_KINDS = ("trigger", "command", "part", "process")
INBOUND_IGNORED_REASONS = ("retained", "empty")  # inbound messages never acted on
# Why a process reading was not used (the pipeline's ``process_samples_<reason>`` counters):
# unusable or not after the last, dated too far ahead of the clock, for an unknown station,
# before the first audio, or dropped from a track that held its cap.
PROCESS_SKIP_REASONS = ("bad", "ahead", "ignored", "no_audio", "over_cap")
# Why a trigger made no boundary: monitor.segment.triggers.TriggerIgnored's values (ops may
# not import the segmenters; a test checks the two lists agree).
TRIGGER_IGNORED_REASONS = (
    "queue_full",
    "start_in_weld",
    "stop_while_idle",
    "stream_end",
    "unknown_station",
    "no_audio",
)
# Audio minus arc-current boundary (s) of a weld the audio cut (the segmentation self-check):
# symmetric around 0, fine inside the 0.5 s target, coarse out to the field's 5-13 s misses.
BOUNDARY_ERROR_BUCKETS_S = (
    -10.0,
    -5.0,
    -2.0,
    -1.0,
    -0.5,
    -0.25,
    -0.1,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
BOUNDARY_EDGES = ("start", "end")
WELD_LABELS = get_args(WeldResult.model_fields["label_name"].annotation)  # good_weld, defect


class Metrics:
    """Every metric the daemon exports; attributes are prometheus_client metric objects.

    `clock` is the ``time.monotonic``-like clock the audio age is measured on (tests pass
    their own); before the first block the age counts from construction.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """A fresh registry holding every weldmon metric at its initial value."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._last_audio_at = clock()
        self._totals: dict[int, tuple[Counter, float]] = {}
        # Read by other threads (the OPC UA server's health): replaced, never mutated.
        self.device_is_open = False
        self.dead_channels: frozenset[tuple[str, int]] = frozenset()
        reg = self.registry
        reg.register(ThreadCpuCollector())

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=NAMESPACE, registry=reg)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, namespace=NAMESPACE, registry=reg)

        self.info = Info(
            "build", "daemon version and loaded model", namespace=NAMESPACE, registry=reg
        )
        self.model_loaded = gauge("model_loaded", "1 while a model is loaded and self-tested")
        # Audio
        self.audio_frames = counter("audio_frames", "audio frames received from the source")
        self.audio_overflows = counter(
            "audio_overflows", "input overflows PortAudio reported (audio lost before us)"
        )
        self.audio_dropped_frames = counter(
            "audio_dropped_frames", "frames lost to overflow or a full ring buffer"
        )
        self.audio_nonfinite_samples = counter(
            "audio_nonfinite_samples", "NaN/Inf samples replaced by silence"
        )
        self.audio_last_block_age = gauge(
            "audio_last_block_age_seconds", "seconds since the last audio block (or since start)"
        )
        self.audio_last_block_age.set_function(self.audio_age_s)
        self.device_losses = counter("audio_device_losses", "times the sound device was lost")
        self.device_open = gauge(
            "audio_device_open", "1 while the sound device's stream is open and delivering"
        )
        self.dead_microphones = Gauge(
            "audio_dead_microphone",
            "1 while an input channel delivers exact digital silence past audio.silence_alarm_s",
            ("station", "channel"),
            namespace=NAMESPACE,
            registry=reg,
        )
        # Inference
        self.windows_inferred = counter("windows_inferred", "windows judged by the model")
        self.inference_latency = Histogram(
            "inference_latency_seconds",
            "seconds from a window's submission to its probability (queue wait included)",
            namespace=NAMESPACE,
            registry=reg,
            buckets=INFERENCE_LATENCY_BUCKETS_S,
        )
        self.inference_queue_depth = gauge(
            "inference_queue_depth", "windows waiting for the inference worker"
        )
        # Welds
        self.welds = counter("welds", "welds judged, by station and label", ("station", "label"))
        self.welds_degraded = counter(
            "welds_degraded", "welds judged on incomplete audio", ("station", "reason")
        )
        self.alerts = counter("alerts", "early defect alerts raised", ("station",))
        self.weld_in_progress = Gauge(
            "weld_in_progress",
            "1 from a weld's start event to its result",
            ("station",),
            namespace=NAMESPACE,
            registry=reg,
        )
        self.weld_last_p_defect = Gauge(
            "weld_last_p_defect",
            "p_defect of the station's latest weld result",
            ("station",),
            namespace=NAMESPACE,
            registry=reg,
        )
        # Segmentation self-check: audio boundaries against the arc current (process data)
        self.boundary_error = Histogram(
            "segmentation_boundary_error_seconds",
            "audio segmentation's weld start/end minus the arc current's (s), where process "
            "data covers a weld an audio mode cut",
            ("station", "edge"),
            namespace=NAMESPACE,
            registry=reg,
            buckets=BOUNDARY_ERROR_BUCKETS_S,
        )
        self.boundary_unmatched = counter(
            "segmentation_boundary_unmatched",
            "welds an audio mode cut while process data came in, but no arc current overlapped",
            ("station",),
        )
        # MQTT and outbox
        self.mqtt_connected = gauge("mqtt_connected", "1 while connected to the MQTT broker")
        self.mqtt_reconnects = counter("mqtt_reconnects", "successful reconnects to the broker")
        self.outbox_depth = gauge("outbox_depth", "events stored, not yet acknowledged")
        self.outbox_oldest_age = gauge(
            "outbox_oldest_age_seconds", "age of the oldest unacknowledged event (0: none)"
        )
        self.outbox_over_bound = counter(
            "outbox_over_bound", "events stored beyond events.outbox_max_events (none dropped)"
        )
        self.outbox_degraded = gauge(
            "outbox_degraded", "1 while the outbox cannot be written (events held in memory)"
        )
        self.outbox_held = gauge("outbox_held_events", "events held in memory, not yet stored")
        self.outbox_write_failures = counter(
            "outbox_write_failures", "outbox writes that failed (each retried from memory)"
        )
        self.outbox_reopened = counter(
            "outbox_reopened",
            "times the outbox file was found deleted or replaced and made anew (rows kept)",
        )
        self.inbound_ignored = counter(
            "inbound_ignored",
            "inbound MQTT messages ignored: retained copies, empty payloads",
            ("reason",),
        )
        for reason in INBOUND_IGNORED_REASONS:
            self.inbound_ignored.labels(reason=reason)  # export 0 before the first one
        self.malformed_messages = counter(
            "malformed_messages", "inbound MQTT messages ignored as malformed", ("kind",)
        )
        for kind in MALFORMED_KINDS:
            self.malformed_messages.labels(kind=kind)  # export 0 before the first one
        self.process_samples = counter(
            "process_samples", "welder process readings placed on a station's clock"
        )
        self.process_samples_skipped = counter(
            "process_samples_skipped", "welder process readings not used, by reason", ("reason",)
        )
        for reason in PROCESS_SKIP_REASONS:
            self.process_samples_skipped.labels(reason=reason)
        self.triggers_ignored = counter(
            "triggers_ignored", "weld triggers that made no boundary, by reason", ("reason",)
        )
        for reason in TRIGGER_IGNORED_REASONS:
            self.triggers_ignored.labels(reason=reason)
        self.watchdog_withheld = counter(
            "watchdog_pings_withheld", "watchdog pings withheld because the pipeline stalled"
        )
        self.info.info({"version": __version__, "model_sha256": ""})

    def declare_stations(self, stations: list[str], channel_stations: list[str]) -> None:
        """Export every per-station series at 0 from the start, so a dashboard or an alert
        rule (``rate()``, ``== 1``) sees a station before its first weld or alarm. The
        latest p_defect is the exception: there is none before the first result.

        `channel_stations` names the station each input channel feeds (in `mix` mode every
        channel feeds the one station)."""
        for station in stations:
            for label in WELD_LABELS:
                self.welds.labels(station=station, label=label)
            self.alerts.labels(station=station)
            self.boundary_unmatched.labels(station=station)
            for reason in DegradedReason:
                self.welds_degraded.labels(station=station, reason=reason)
            self.weld_in_progress.labels(station=station).set(0)
        for channel, station in enumerate(channel_stations):
            self.dead_microphones.labels(station=station, channel=str(channel)).set(0)

    def device(self, is_open: bool) -> None:
        """The sound device's stream opened (True) or was lost (False)."""
        self.device_is_open = is_open
        self.device_open.set(1 if is_open else 0)

    def dead_microphone(self, station: str, channel: int, dead: bool) -> None:
        """Input `channel` (feeding `station`) began (True) or ended a dead-microphone episode."""
        key = (station, channel)
        self.dead_channels = self.dead_channels | {key} if dead else self.dead_channels - {key}
        self.dead_microphones.labels(station=station, channel=str(channel)).set(1 if dead else 0)

    def weld_started(self, station: str) -> None:
        """A weld began on `station`."""
        self.weld_in_progress.labels(station=station).set(1)

    def audio_block(
        self, frames: int, *, dropped_frames: int = 0, nonfinite_samples: int = 0
    ) -> None:
        """One audio block arrived: count its frames, losses and repairs; reset the age."""
        self._last_audio_at = self._clock()
        self.audio_frames.inc(frames)
        if dropped_frames:
            self.audio_dropped_frames.inc(dropped_frames)
        if nonfinite_samples:
            self.audio_nonfinite_samples.inc(nonfinite_samples)

    def audio_age_s(self) -> float:
        """Seconds since the last audio block (since construction when there was none)."""
        return max(0.0, self._clock() - self._last_audio_at)

    def window_inferred(self, latency_s: float) -> None:
        """One window got its probability `latency_s` seconds after it was submitted."""
        self.windows_inferred.inc()
        self.inference_latency.observe(latency_s)

    def weld_result(self, station: str, label: str, degraded: str | None = None) -> None:
        """A weld ended with `label` (``good_weld`` / ``defect``); `degraded` names why its
        audio was incomplete, if it was."""
        self.welds.labels(station=station, label=label).inc()
        self.weld_in_progress.labels(station=station).set(0)
        if degraded:
            self.welds_degraded.labels(station=station, reason=degraded).inc()

    def boundary_check(
        self, station: str, start_error_s: float | None, end_error_s: float | None
    ) -> None:
        """A weld the audio cut was checked against the arc current: its errors (s), or
        None for both when no arc overlapped it."""
        if start_error_s is None or end_error_s is None:
            self.boundary_unmatched.labels(station=station).inc()
            return
        self.boundary_error.labels(station=station, edge="start").observe(start_error_s)
        self.boundary_error.labels(station=station, edge="end").observe(end_error_s)

    def alert(self, station: str) -> None:
        """An early defect alert was raised on `station`."""
        self.alerts.labels(station=station).inc()

    def malformed(self, kind: str) -> None:
        """An inbound message of `kind` (one of `MALFORMED_KINDS`) was ignored."""
        self.malformed_messages.labels(kind=kind).inc()

    def malformed_total(self, kind: str) -> float:
        """Malformed inbound messages of `kind` so far."""
        value = self.registry.get_sample_value(
            f"{NAMESPACE}_malformed_messages_total", {"kind": kind}
        )
        return value or 0.0

    def model(self, sha256: str | None) -> None:
        """The model now in use (None: none loaded)."""
        self.model_loaded.set(0 if sha256 is None else 1)
        self.info.info({"version": __version__, "model_sha256": sha256 or ""})

    def pipeline_totals(self, counts: dict[str, int]) -> None:
        """Raise the process-data and trigger counters to the pipeline's running totals
        (`counts` by the pipeline's counter names; missing ones are 0)."""
        self.advance_to(self.process_samples, counts.get("process_samples", 0))
        for reason in PROCESS_SKIP_REASONS:
            total = counts.get(f"process_samples_{reason}", 0)
            self.advance_to(self.process_samples_skipped.labels(reason=reason), total)
        for reason in TRIGGER_IGNORED_REASONS:
            total = counts.get(f"triggers_ignored_{reason}", 0)
            self.advance_to(self.triggers_ignored.labels(reason=reason), total)

    def advance_to(self, counter: Counter, total: float) -> None:
        """Raise `counter` to a component's running `total` (pass a labelled child as
        ``metric.labels(...)``). A total below the last one seen means the component was
        recreated and counts from 0 again, so all of it is new."""
        key = id(counter)
        _, last = self._totals.get(key, (counter, 0.0))
        delta = total - last if total >= last else total
        if delta > 0:
            counter.inc(delta)
        self._totals[key] = (counter, total)  # keeps `counter` alive so its id stays unique
