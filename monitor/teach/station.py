"""The stations' teach-in state machine and the ``{prefix}/cmd/teach`` handler.

Per station::

    idle --start--> collecting --accept (>= 1 weld)--> taught --start--> collecting ...
                    collecting --reset--> idle (or taught, if it was)   taught --reset--> idle

While a station collects, the welds that *start* afterwards carry ``teach_in: true`` and
the run's id (`TrackerOptions.teach`); they are judged as usual, by the threshold in force.
Their results (`observe`, an event listener) bring their judged window probabilities; a
degraded or unjudged weld is skipped and counted, a weld the operator drops is left out.
``accept`` computes the threshold (`deploy.teach_rule`) from the kept welds' windows and
stores it (`monitor.teach.store`) before it takes effect: a store that fails refuses the
accept and the run goes on. A second ``start`` while one runs is refused; so is any action
on a station the daemon does not have.

The calibration belongs to the model it was taught with: `bind` (start, every reload)
loads the file for the model in service; a file of another model is void (set aside, one
error event), a corrupt or foreign one likewise; a running teach-in's windows came from the
old model, so a model change ends it too. Event loop only; `snapshot` is read by /metrics.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from deploy.teach_rule import TeachRuleError, taught_threshold
from monitor.config_edit import ConfigWriteError
from monitor.events import Event, WeldResult, utc_now
from monitor.events.teach import TeachCommand, TeachReply, TeachState
from monitor.events.vocabulary import ThresholdSource
from monitor.pipeline.tracker import ModelInfo
from monitor.teach import store
from monitor.teach.config import TeachInConfig
from monitor.teach.drift import DriftWatch
from monitor.teach.store import Calibration
from weldmon import __version__

log = structlog.get_logger(__name__)

STATE_CODES: dict[TeachState, int] = {"idle": 0, "collecting": 1, "taught": 2}  # the gauge


class TeachRefusedError(Exception):
    """A command that cannot be done; its message is the reply's reason."""


@dataclass
class Run:
    """A running teach-in at one station."""

    run_id: str
    started_by: str
    welds: dict[str, list[float]] = field(default_factory=dict)  # weld_id -> window probs
    dropped: list[str] = field(default_factory=list)
    skipped: int = 0

    @property
    def windows(self) -> int:
        """Windows collected so far."""
        return sum(len(w) for w in self.welds.values())


class TeachIn:
    """Every station's teach-in; `handle` answers commands, `observe` collects results."""

    def __init__(
        self,
        stations: list[str],
        cfg: TeachInConfig,
        state_dir: Path,
        void: Callable[[str, str | None], None],
        recalibrate: Callable[[str, str], None] | None = None,
    ) -> None:
        """`void(message, station)` reports a calibration or run that was dropped (the
        daemon's error event); `recalibrate(message, station)` a taught station whose good
        welds drifted from its reference (once per episode, monitor/teach/drift.py); `bind`
        the model in service before anything else."""
        self.stations = list(stations)
        self.cfg = cfg
        self.state_dir = state_dir
        self._void = void
        self._recalibrate = recalibrate
        self.drift: dict[str, DriftWatch] = {}  # station -> its calibration's drift watch
        self.model: ModelInfo | None = None
        self.runs: dict[str, Run] = {}
        self.calibrations: dict[str, Calibration] = {}
        # stations in the file this config does not have: kept in it, never used
        self._elsewhere: dict[str, Calibration] = {}
        self.applied = 0  # commands done (status included)
        self.refused = 0  # commands refused (their reason is logged and in the reply)

    # -- the model in service ----------------------------------------------------------------

    def bind(self, model: ModelInfo, cfg: TeachInConfig | None = None) -> None:
        """The model in service (start, every reload): loads its calibrations; another
        model's, or an unusable file, are void and reported."""
        if cfg is not None:
            self.cfg = cfg
        previous, self.model = self.model, model
        if previous is not None and previous.sha256 == model.sha256:
            return  # a reload of the same model keeps everything
        for station, run in sorted(self.runs.items()):
            self._void(
                f"teach-in {run.run_id} at {station} ended: the model changed, its windows "
                "were judged by the old one; start it again",
                station,
            )
        self.runs.clear()
        loaded, problem = store.load(self.state_dir, model.sha256)
        self._elsewhere = {k: v for k, v in loaded.items() if k not in self.stations}
        for station in sorted(self._elsewhere):  # kept for a config that has it again
            log.warning("teach_in_station_not_configured", station=station)
        self.calibrations = {k: v for k, v in loaded.items() if k in self.stations}
        if problem is not None:
            kept = store.set_aside(
                self.state_dir, "void" if problem.kind == "other_model" else "bad"
            )
            where = f" (kept as {kept.name})" if kept is not None else ""
            self._void(problem.message + where, None)
        self.drift.clear()  # another model's welds say nothing about these calibrations
        for station, found in sorted(self.calibrations.items()):
            log.info("teach_in_loaded", station=station, threshold=found.threshold)
            if found.reference is None:  # the file predates the drift watch
                log.warning("teach_in_drift_not_watched", station=station, reason="no reference")

    # -- what judges a weld ------------------------------------------------------------------

    def taught(self, station: str, model_sha256: str) -> Calibration | None:
        """The station's calibration if it belongs to `model_sha256` (else None)."""
        if self.model is None or self.model.sha256 != model_sha256:
            return None
        return self.calibrations.get(station)

    def running(self, station: str) -> str | None:
        """The id of the station's running teach-in, if any."""
        run = self.runs.get(station)
        return run.run_id if run is not None else None

    def observe(self, event: Event) -> None:
        """An event listener: a result of a running teach-in's weld joins its sample; a
        good weld judged by a station's calibration joins its drift watch."""
        if not isinstance(event, WeldResult):
            return
        if not event.teach_in:
            self._watch_drift(event)
            return
        run = self.runs.get(event.station)
        if run is None or run.run_id != event.teach_in_run:
            return  # the run was reset or accepted meanwhile
        probs = event.window_probs or []
        if not event.judged or event.degraded or not probs:
            run.skipped += 1
            log.warning("teach_in_weld_skipped", station=event.station, weld_id=event.weld_id)
            return
        run.welds[event.weld_id] = list(probs)
        log.info(
            "teach_in_weld", station=event.station, weld_id=event.weld_id, welds=len(run.welds)
        )

    def _watch_drift(self, result: WeldResult) -> None:
        station = result.station
        calibration = self.calibrations.get(station)
        if (
            calibration is None
            or calibration.reference is None  # taught before drift was watched
            or station in self.runs  # a new teach-in collects: the old one is on its way out
            or result.teach_in_id != calibration.teach_in_id  # judged by another threshold
            or not result.judged
            or result.degraded
            or result.label != 0
        ):
            return
        watch = self.drift.get(station)
        if watch is None or watch.teach_in_id != calibration.teach_in_id:
            watch = self.drift[station] = DriftWatch.start(
                calibration.teach_in_id,
                calibration.reference,
                calibration.threshold,
                welds=self.cfg.drift_welds,
                min_welds=self.cfg.drift_min_welds,
                limit=self.cfg.drift_share,
            )
        if not watch.add(result.p_defect):
            return
        median = statistics.median(watch.scores)
        message = (
            f"{station}: the median score of its last {len(watch.scores)} good welds is "
            f"{median:.4f}, {watch.share:.2f} of the way from the taught reference "
            f"{watch.reference:.4f} to the taught threshold {watch.threshold:.4f} (limit "
            f"{watch.limit:.2f}): check the cell (torch, gas, wire, microphone) and teach it again"
        )
        log.warning(
            "teach_in_recalibrate",
            station=station,
            teach_in_id=watch.teach_in_id,
            median=median,
            share=watch.share,
            reference=watch.reference,
            threshold=watch.threshold,
        )
        if self._recalibrate is not None:
            self._recalibrate(message, station)

    # -- commands ----------------------------------------------------------------------------

    def handle(self, command: TeachCommand) -> TeachReply:
        """Do one command; the reply says what happened (never raises)."""
        log.info(
            "teach_in_requested", action=command.action, station=command.station, by=command.by
        )
        warning = None
        try:
            if command.station not in self.stations:
                raise TeachRefusedError(
                    f"unknown station {command.station!r}; this daemon has {self.stations}"
                )
            warning = getattr(self, f"_{command.action}")(command)
        except TeachRefusedError as exc:
            self.refused += 1
            log.error(
                "teach_in_refused", action=command.action, station=command.station, reason=str(exc)
            )
            return self.reply(command, refused=str(exc))
        self.applied += 1
        return self.reply(command, warning=warning)

    def _start(self, command: TeachCommand) -> None:
        run = self.runs.get(command.station)
        if run is not None:
            raise TeachRefusedError(
                f"teach-in {run.run_id} already runs at {command.station}; accept or reset it first"
            )
        self.runs[command.station] = Run(uuid.uuid4().hex[:12], command.by)

    def _status(self, command: TeachCommand) -> None:
        return None

    def _drop(self, command: TeachCommand) -> None:
        run = self._run(command)
        if command.weld_id is None:
            raise TeachRefusedError("drop needs the weld_id of the weld to leave out")
        if run.welds.pop(command.weld_id, None) is None:
            raise TeachRefusedError(
                f"{command.weld_id} is not a weld of teach-in {run.run_id} (collected: "
                f"{len(run.welds)})"
            )
        run.dropped.append(command.weld_id)

    def _accept(self, command: TeachCommand) -> str | None:
        run = self._run(command)
        if not run.welds:
            raise TeachRefusedError(
                f"teach-in {run.run_id} holds no weld yet (skipped {run.skipped}, dropped "
                f"{len(run.dropped)}): weld at least one good part first"
            )
        model = self._bound()
        lower, upper = self.cfg.guards(model.threshold)
        try:
            rule = taught_threshold(
                list(run.welds.values()),
                model.eval_pool_ratio,
                self.cfg.target_false_alarm,
                lower,
                upper,
            )
        except TeachRuleError as exc:
            raise TeachRefusedError(str(exc)) from exc
        calibration = Calibration(
            teach_in_id=run.run_id,
            threshold=rule.threshold,
            raw_threshold=min(1.0, max(0.0, rule.raw)),
            bounded=rule.bounded,
            target_false_alarm=rule.target_false_alarm,
            welds=rule.welds,
            windows=rule.windows,
            weld_ids=list(run.welds),
            accepted_at=utc_now(),
            by=command.by,
            warning=rule.warning,
            reference=rule.reference,
        )
        self._store({**self.calibrations, command.station: calibration})
        self.runs.pop(command.station)
        log.info(
            "teach_in_accepted", station=command.station, **calibration.model_dump(mode="json")
        )
        return rule.warning

    def _reset(self, command: TeachCommand) -> None:
        if self.runs.pop(command.station, None) is not None:
            return  # the run ends; a calibration in force stays
        if command.station not in self.calibrations:
            raise TeachRefusedError(f"{command.station} has no teach-in to reset")
        self._store({k: v for k, v in self.calibrations.items() if k != command.station})

    def _run(self, command: TeachCommand) -> Run:
        run = self.runs.get(command.station)
        if run is None:
            raise TeachRefusedError(f"no teach-in runs at {command.station}; start one first")
        return run

    def _bound(self) -> ModelInfo:
        if self.model is None:
            raise RuntimeError("TeachIn.bind was not called")
        return self.model

    def _store(self, calibrations: dict[str, Calibration]) -> None:
        try:
            store.save(self.state_dir, self._bound().sha256, {**self._elsewhere, **calibrations})
        except ConfigWriteError as exc:
            raise TeachRefusedError(
                f"the calibration cannot be stored, nothing changed: {exc}"
            ) from exc
        self.calibrations = calibrations

    # -- answers -----------------------------------------------------------------------------

    def state(self, station: str) -> TeachState:
        """idle, collecting or taught."""
        if station in self.runs:
            return "collecting"
        return "taught" if station in self.calibrations else "idle"

    def reply(
        self, command: TeachCommand, *, refused: str | None = None, warning: str | None = None
    ) -> TeachReply:
        """The reply to `command` with the station's state after it."""
        station = command.station
        fields: dict = {}
        if station in self.stations and self.model is not None:
            run = self.runs.get(station)
            calibration = self.calibrations.get(station)
            fields = {
                "state": self.state(station),
                "artifact_threshold": self.model.threshold,
                "threshold": calibration.threshold if calibration else self.model.threshold,
                "threshold_source": ThresholdSource.TEACH_IN if calibration else None,
                "calibration": calibration.model_dump(mode="json") if calibration else None,
            }
            if run is not None:
                fields |= {
                    "run_id": run.run_id,
                    "welds": len(run.welds),
                    "windows": run.windows,
                    "weld_ids": list(run.welds),
                    "dropped": list(run.dropped),
                    "skipped": run.skipped,
                }
        return TeachReply(
            daemon_version=__version__,
            model_sha256=self._bound().sha256,
            action=command.action,
            station=station,
            outcome="refused" if refused else "applied",
            reason=refused,
            warning=warning,
            request_id=command.request_id,
            by=command.by,
            **fields,
        )

    def drift_snapshot(self) -> dict[str, tuple[float, int]]:
        """station -> (drift share or NaN, 1 while it needs recalibrating else 0): /metrics.
        The share only for a station whose calibration has a watch with enough welds."""
        out = {}
        for station in self.stations:
            calibration = self.calibrations.get(station)
            watch = self.drift.get(station)
            if calibration is None or watch is None or watch.teach_in_id != calibration.teach_in_id:
                out[station] = (math.nan, 0)
                continue
            share = watch.share
            out[station] = (math.nan if share is None else share, int(watch.alarmed))
        return out

    def snapshot(self) -> dict[str, tuple[int, float, int]]:
        """station -> (state code, taught threshold or NaN, welds collected): /metrics."""
        out = {}
        for station in self.stations:
            calibration = self.calibrations.get(station)
            run = self.runs.get(station)
            out[station] = (
                STATE_CODES[self.state(station)],
                calibration.threshold if calibration is not None else math.nan,
                len(run.welds) if run is not None else 0,
            )
        return out
