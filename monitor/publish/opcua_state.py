"""What the OPC UA namespace shows, kept from the daemon's events (pure; no asyncua here).

The ``opcua:`` config section and `OpcUaState`, the per-station values a PLC or SCADA reads:
the latest verdict and what it belongs to, a latched alert flag, whether a weld is in
progress and the station's health. `monitor.publish.opcua` serves them; this module is
importable without the ``opcua`` extra, so the config validates on any install.

Thread-safety: `apply` runs on the daemon's event loop (an event listener), `acknowledge`
and `snapshot` on the OPC UA server's thread; one lock guards the state.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import Field

from deploy.strict_model import StrictModel
from monitor.events import Event, WeldAlert, WeldProgress, WeldResult, WeldStart

DEFAULT_OPCUA_HOST = "127.0.0.1"  # loopback: a PLC on the LAN needs the operator to open it
DEFAULT_OPCUA_PORT = 4840  # IANA's port for OPC UA binary (opc.tcp)
DEFAULT_HEALTH_INTERVAL_S = 1.0  # how often each station's health is re-read
NO_VERDICT = "none"  # Verdict before a station's first result
NO_LABEL = -1  # Label before a station's first result


class OpcUaConfig(StrictModel):
    """The ``opcua:`` config section: an OPC UA server inside `weldmon run` (off by default;
    needs the ``opcua`` extra)."""

    enabled: bool = False
    host: str = Field(DEFAULT_OPCUA_HOST, min_length=1)  # address to bind
    port: int = Field(DEFAULT_OPCUA_PORT, ge=1, le=65535)
    path: str = Field("weldmon", pattern=r"^[A-Za-z0-9_.-]{0,64}$")  # opc.tcp://host:port/path
    namespace_uri: str = Field("urn:weldmon", min_length=1, max_length=256)
    # true: alerts stay set until a client calls AcknowledgeAlert; false: no method, an alert
    # clears when the station's next weld starts
    acknowledge: bool = True
    health_interval_s: float = Field(DEFAULT_HEALTH_INTERVAL_S, gt=0.0, le=60.0)

    @property
    def endpoint(self) -> str:
        """The endpoint URL clients connect to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"opc.tcp://{host}:{self.port}/{self.path}"


@dataclass
class StationValues:
    """One station's values. The verdict group (verdict, label, p_defect, threshold,
    weld_id, part_id, result_at) describes the latest result; `result_count` counts them,
    so a client that triggers on its change reads a consistent group."""

    verdict: str = NO_VERDICT
    label: int = NO_LABEL
    p_defect: float = 0.0
    threshold: float = 0.0
    weld_id: str = ""
    part_id: str = ""
    result_at: datetime | None = None
    result_count: int = 0
    alert: bool = False
    weld_in_progress: bool = False
    rolling_p_defect: float = 0.0  # the weld in progress, after every judged window
    health: str = "starting"


@dataclass
class Snapshot:
    """A consistent copy of every station's values and the daemon-wide ones."""

    stations: dict[str, StationValues]
    model_sha256: str = ""
    daemon_version: str = ""


@dataclass
class OpcUaState:
    """Per-station values fed by events; `acknowledge` clears a latched alert."""

    stations: list[str]
    latch_until_acknowledged: bool = True
    _values: dict[str, StationValues] = field(init=False)
    _model_sha256: str = field(default="", init=False)
    _daemon_version: str = field(default="", init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._values = {s: StationValues() for s in self.stations}

    def apply(self, event: Event) -> bool:
        """Take one event into the values; False when it changed nothing shown."""
        with self._lock:
            self._model_sha256 = event.model_sha256
            self._daemon_version = event.daemon_version
            station = getattr(event, "station", None)
            values = self._values.get(station) if station else None
            if values is None:
                return False
            if isinstance(event, WeldStart):
                values.weld_in_progress = True
                values.rolling_p_defect = 0.0
                if not self.latch_until_acknowledged:
                    values.alert = False
            elif isinstance(event, WeldProgress):
                values.rolling_p_defect = event.p_defect
            elif isinstance(event, WeldAlert):
                values.alert = True
            elif isinstance(event, WeldResult):
                values.verdict = event.label_name
                values.label = event.label
                values.p_defect = event.p_defect
                values.threshold = event.threshold
                values.weld_id = event.weld_id
                values.part_id = (event.context or {}).get("part_id", "")
                values.result_at = event.ended_at
                values.result_count += 1
                values.weld_in_progress = False
                values.alert = values.alert or event.label == 1
            else:
                return False
            return True

    def set_health(self, station: str, health: str) -> bool:
        """The station's health now; False when it did not change."""
        with self._lock:
            values = self._values[station]
            changed = values.health != health
            values.health = health
            return changed

    def acknowledge(self, station: str) -> bool:
        """A client acknowledged the station's alert; True when one was set."""
        with self._lock:
            values = self._values[station]
            was = values.alert
            values.alert = False
            return was

    def snapshot(self) -> Snapshot:
        """A copy of everything shown, taken under the lock."""
        with self._lock:
            return Snapshot(copy.deepcopy(self._values), self._model_sha256, self._daemon_version)
