"""The one MQTT event schema, shared by the daemon, replay and every consumer.

Outbound events are pydantic models discriminated on ``kind``; each carries enough to be
understood alone (ids, times, model sha256, station, verdict numbers). Delivery is
at-least-once, so consumers deduplicate on ``event_id``. The retained status message lives
here too, with the topic, QoS and retain rules for each, and the part-context types the
inbound messages reuse. The room's other modules: `vocabulary` (the reason and code enums,
imported from here), `inbound` (triggers, part announcements, process data) and `schema`
(the JSON Schema of both directions).

May import: deploy and its own room (the views and every room below them import it).
``python -m monitor.events`` prints the JSON Schema committed as ``docs/mqtt.schema.json``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from deploy.contract import MODEL_NAME_PATTERN, MODEL_VERSION_PATTERN
from deploy.errors import WeldmonError
from deploy.segment.modes import SegmentationMode
from deploy.strict_model import StrictModel
from monitor.events.vocabulary import DegradedReason, EndReason, ErrorCode, ThresholdSource

# Bumped when a field is removed or changes meaning; adding an optional field does not bump it.
SCHEMA_VERSION: Final = 1
DEFAULT_TOPIC_PREFIX = "weldmon"

# A station name is one MQTT topic level: no '/', '+', '#', and short enough to read in a UI.
STATION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
UUID4_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
REASON_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

QOS_AT_MOST_ONCE = 0  # progress: a lost update is replaced by the next window's
QOS_AT_LEAST_ONCE = 1  # everything a consumer must not miss
# Events are never retained: a late subscriber must not see an old weld as new. Only the
# status message is retained.
EVENTS_RETAINED = False

_UTC_MS_FORMAT = "%Y-%m-%dT%H:%M:%S"


class MalformedMessageError(WeldmonError):
    """An MQTT payload is not a valid weldmon message (the caller counts and logs it)."""


def _to_utc_ms(value: datetime) -> datetime:
    # Truncate to the millisecond the wire format carries, so a model equals its round trip.
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_utc(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, e.g. ``2026-03-01T12:00:00.250Z``."""
    value = _to_utc_ms(value)
    return f"{value.strftime(_UTC_MS_FORMAT)}.{value.microsecond // 1000:03d}Z"


def utc_now() -> datetime:
    """The wall clock now, timezone-aware UTC, truncated to milliseconds."""
    return _to_utc_ms(datetime.now(UTC))


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone (UTC with 'Z' on the wire)")
    try:
        return _to_utc_ms(value)
    except OverflowError as exc:
        # e.g. 9999-12-31T23:59:59-05:00: in UTC past year 9999. A ValueError makes it one bad
        # value (pydantic reports it), not an exception that loses the whole message.
        raise ValueError(f"timestamp out of range in UTC: {exc}") from exc


# Aware datetime in Python, "YYYY-mm-ddTHH:MM:SS.fffZ" on the wire.
UtcTimestamp = Annotated[
    datetime,
    AfterValidator(_require_aware),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
]


def new_event_id() -> str:
    """A fresh UUID4 string: the deduplication key of one event."""
    return str(uuid.uuid4())


def new_weld_id(station: str, started_at: datetime) -> str:
    """A unique weld id: ``{station}-{YYYYmmddTHHMMSS.fffZ}-{8 hex}``."""
    stamp = format_utc(started_at).replace("-", "").replace(":", "")
    return f"{station}-{stamp}-{uuid.uuid4().hex[:8]}"


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
StationName = Annotated[str, Field(pattern=STATION_PATTERN)]
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN)]
NonNegativeSeconds = Annotated[float, Field(ge=0.0)]


# Consumers keep working when a newer daemon adds a reason or a code: any snake_case word is
# accepted after the known ones (a union tried left to right keeps known values as enums).
OpenDegradedReason = Annotated[
    DegradedReason | Annotated[str, Field(pattern=REASON_PATTERN)],
    Field(union_mode="left_to_right"),
]
OpenErrorCode = Annotated[
    ErrorCode | Annotated[str, Field(pattern=REASON_PATTERN)],
    Field(union_mode="left_to_right"),
]


# --- part context: what the line says about the part a weld belongs to ------------------------
# (integ: part traceability) A trigger's start, or a part announcement, may name the part,
# program, seam, operator... as string key/value pairs. Bounded so a misbehaving sender cannot
# bloat every event: keys are identifiers, values short strings (JSON numbers and booleans are
# taken as their text), at most MAX_CONTEXT_KEYS pairs.
MAX_CONTEXT_KEYS = 16
MAX_CONTEXT_VALUE_CHARS = 128
CONTEXT_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"


def _context_text(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    return value  # a string passes; anything else fails as "not a valid string"


ContextKey = Annotated[str, Field(pattern=CONTEXT_KEY_PATTERN)]
ContextText = Annotated[
    str, BeforeValidator(_context_text), Field(max_length=MAX_CONTEXT_VALUE_CHARS)
]
WeldContext = Annotated[dict[ContextKey, ContextText], Field(max_length=MAX_CONTEXT_KEYS)]


class _Model(StrictModel):
    def to_json(self) -> bytes:
        """Compact JSON, fields in declaration order (stable across runs)."""
        return self.model_dump_json().encode()


class Source(_Model):
    """Where the audio came from: a capture device or a file (replay)."""

    type: Literal["device", "file"]
    name: str = Field(min_length=1, max_length=512)
    # Replay (type "file"): where the weld lies in its file, in seconds from the file's first
    # sample (the start on weld_start and weld_result, the end on weld_result only).
    start_s: NonNegativeSeconds | None = None
    end_s: NonNegativeSeconds | None = None


# --- the arc and the welder's process data: optional result fields ------------------------
# Added by the segmentation work (schema_version unchanged): the arc's dropouts as the weld's
# segmenter heard them, and the weld's record from the power source's process data.


class DropoutSummary(_Model):
    """The arc's interruptions inside one weld (a dropout is itself a symptom)."""

    count: int = Field(ge=0)
    longest_s: NonNegativeSeconds
    total_s: NonNegativeSeconds


class ProcessRecord(_Model):
    """One weld's record from the welder's process data (``{prefix}/{station}/process`` or,
    in replay, the run's sensor log): null where the source does not report the quantity.
    Means and spreads are over the time the arc burned (current above 5 A)."""

    samples: int = Field(ge=1)  # process samples inside the weld
    arc_s: NonNegativeSeconds  # time with the current above 5 A
    current_mean_a: float | None = None
    current_std_a: float | None = Field(None, ge=0.0)
    voltage_mean_v: float | None = None
    voltage_std_v: float | None = Field(None, ge=0.0)
    energy_kj: float | None = None  # arc energy: current x voltage over the arc time
    wire_consumed_m: float | None = Field(None, ge=0.0)
    # where the current fell under 30 % of the weld's median arc current (at least 5 A)
    dropouts: DropoutSummary
    # -- optional fields added within schema_version 1 (issue 20: segmentation self-check) --
    # Only when an audio mode (crackle, gate) cut the weld: whether an arc-current span
    # overlaps it, and the audio's start and end minus that span's (s; negative: the audio
    # cut before the current). Null in current mode and when no arc overlaps the weld.
    arc_matched: bool | None = None
    start_error_s: float | None = None
    end_error_s: float | None = None


class _EventBase(_Model):
    # Declared here so `kind` leads every payload; each event narrows it to its Literal.
    kind: str
    event_id: str = Field(default_factory=new_event_id, pattern=UUID4_PATTERN)
    schema_version: Literal[1] = SCHEMA_VERSION
    emitted_at: UtcTimestamp = Field(default_factory=utc_now)
    daemon_version: str = Field(min_length=1, max_length=64)
    model_sha256: Sha256
    # -- optional fields added within schema_version 1 (integ: model identity) --
    # The model's human-readable name and version from its artifact (null when the artifact
    # names none, e.g. the original pipeline's).
    model_name: str | None = Field(None, pattern=MODEL_NAME_PATTERN)
    model_version: str | None = Field(None, pattern=MODEL_VERSION_PATTERN)
    # -- optional fields added within schema_version 1 (faults: replay) --
    # true: made by `weldmon replay --publish` from a recording, not by a live weld
    replay: bool = False


class _WeldEventBase(_EventBase):
    station: StationName
    weld_id: str = Field(min_length=1, max_length=160)
    source: Source
    # -- optional fields added within schema_version 1 (integ: per-station thresholds) --
    # where the event's `threshold` (the decision threshold) came from
    threshold_source: ThresholdSource = ThresholdSource.ARTIFACT
    # -- optional fields added within schema_version 1 (issue 19: teach-in) --
    # the accepted teach-in that set the threshold (threshold_source teach_in), else null
    teach_in_id: str | None = Field(None, min_length=1, max_length=64)
    teach_in_welds: int | None = Field(None, ge=1)  # how many welds it was taught from
    # true: the weld belongs to the station's running teach-in (`teach_in_run` names it);
    # judged as usual, its windows become the teach-in's sample unless dropped
    teach_in: bool = False
    teach_in_run: str | None = Field(None, min_length=1, max_length=64)


class WeldStart(_WeldEventBase):
    """A weld began (QoS 1)."""

    kind: Literal["weld_start"] = "weld_start"
    started_at: UtcTimestamp
    segmentation: SegmentationMode
    threshold: Probability
    # the rolling p_defect at which this weld's early alert fires, and where it came from
    alert_threshold: Probability | None = None
    alert_threshold_source: ThresholdSource | None = None
    # (integ: part traceability) the part this weld belongs to, from the trigger's start or
    # the station's last part announcement; null when the line said nothing
    context: WeldContext | None = None


class WeldProgress(_WeldEventBase):
    """One more window was judged; ``p_defect`` is the rolling top-k pool so far (QoS 0)."""

    kind: Literal["weld_progress"] = "weld_progress"
    window_index: int = Field(ge=0)
    window_p_defect: Probability
    p_defect: Probability
    n_windows: int = Field(ge=1)
    threshold: Probability
    elapsed_s: NonNegativeSeconds


class WeldAlert(_WeldEventBase):
    """The alert rule first held while the weld goes on (QoS 1): ``alert_windows``
    consecutive windows confirmed inside the weld reached ``alert_threshold``
    (`deploy.alert_rule`); the weld's result will be a defect. ``threshold`` is the decision
    threshold; ``p_defect`` and ``n_windows`` pool the confirmed windows so far."""

    kind: Literal["weld_alert"] = "weld_alert"
    p_defect: Probability
    threshold: Probability
    alert_threshold: Probability | None = None  # null from daemons before it: the threshold
    alert_threshold_source: ThresholdSource | None = None
    context: WeldContext | None = None  # (integ: part traceability) as in the weld's start
    n_windows: int = Field(ge=1)
    started_at: UtcTimestamp
    at: UtcTimestamp
    # -- optional fields added within schema_version 1 (the alert rule) --
    alert_windows: int | None = Field(default=None, ge=1)  # null from daemons before it


class WeldResult(_WeldEventBase):
    """The verdict at weld end (QoS 1). Times come from the sample clock."""

    kind: Literal["weld_result"] = "weld_result"
    started_at: UtcTimestamp
    ended_at: UtcTimestamp
    duration_s: NonNegativeSeconds
    label: Literal[0, 1]
    label_name: Literal["good_weld", "defect"]
    p_defect: Probability
    threshold: Probability
    n_windows: int = Field(ge=0)
    window_p_max: Probability
    window_probs: list[Probability] | None = None
    degraded: bool
    degraded_reasons: list[OpenDegradedReason] = Field(default_factory=list)
    dropped_frames: int = Field(ge=0)
    end_reason: EndReason
    clip_path: str | None = None
    context: WeldContext | None = None  # (integ: part traceability) as in the weld's start
    # The arc and the process data (see DropoutSummary, ProcessRecord above): dropouts from
    # the segmenters that hear them (crackle, current), process when process data is there.
    dropouts: DropoutSummary | None = None
    process: ProcessRecord | None = None
    # -- optional fields added within schema_version 1 (faults: not judged) --
    # False when not one window could be judged (shorter than a window, every window's audio
    # non-finite or its inference failed, the daemon died first): `label` is then no verdict.
    judged: bool = True
    # -- optional fields added within schema_version 1 (alerts and uncertainty) --
    # p_defect - threshold (positive: the defect side); null when not judged
    margin: float | None = Field(default=None, ge=-1.0, le=1.0)
    # "low" when p_defect lies in the artifact's out-of-fold uncertain zone around the
    # threshold, "high" outside it; null when the artifact carries no calibration
    confidence: Literal["high", "low"] | None = None
    # the alert rule held on this weld's windows (so the label is defect, alert or not)
    alert_rule_met: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> WeldResult:
        expected_name = "defect" if self.label == 1 else "good_weld"
        if self.label_name != expected_name:
            raise ValueError(f"label_name {self.label_name!r} contradicts label {self.label}")
        if self.degraded != bool(self.degraded_reasons):
            raise ValueError("degraded must be true exactly when degraded_reasons is non-empty")
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        if not self.judged and self.n_windows:
            raise ValueError(f"judged is false but {self.n_windows} windows were judged")
        if self.alert_rule_met and self.label != 1:
            raise ValueError("alert_rule_met is true but the label is not defect")
        if self.window_probs is not None and len(self.window_probs) != self.n_windows:
            raise ValueError(
                f"window_probs has {len(self.window_probs)} entries, n_windows is {self.n_windows}"
            )
        return self


class ErrorEvent(_EventBase):
    """Something the operator must know (failed model reload, device lost), on
    ``{prefix}/error`` (QoS 1). Station and weld are set when the error belongs to one."""

    kind: Literal["error"] = "error"
    code: OpenErrorCode
    message: str = Field(min_length=1, max_length=2000)
    station: StationName | None = None
    weld_id: str | None = None
    source: Source | None = None


Event = Annotated[
    WeldStart | WeldProgress | WeldAlert | WeldResult | ErrorEvent,
    Field(discriminator="kind"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

_TOPIC_SUFFIX = {
    "weld_start": "weld/start",
    "weld_progress": "weld/progress",
    "weld_alert": "weld/alert",
    "weld_result": "weld/result",
}


def topic_for(event: Event, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The topic an event is published on."""
    if isinstance(event, ErrorEvent):
        return f"{prefix}/error"
    return f"{prefix}/{event.station}/{_TOPIC_SUFFIX[event.kind]}"


def qos_for(event: Event) -> int:
    """QoS 0 for progress (superseded by the next window), 1 for everything else."""
    return QOS_AT_MOST_ONCE if isinstance(event, WeldProgress) else QOS_AT_LEAST_ONCE


def parse_event(payload: bytes) -> Event:
    """Parse one event payload (any kind); raises MalformedMessageError."""
    try:
        return EVENT_ADAPTER.validate_json(payload)
    except ValidationError as exc:
        raise MalformedMessageError(f"not a weldmon event: {first_errors(exc)}") from exc


# --- status (retained, one per daemon) ------------------------------------------------------

StatusState = Literal["online", "offline", "stopped"]


class StatusMessage(_Model):
    """Retained on ``{prefix}/status``; ``offline`` is the MQTT last will, so it is what
    subscribers see after the daemon dies without a clean disconnect."""

    state: StatusState
    at: UtcTimestamp
    version: str = Field(min_length=1, max_length=64)
    model_sha256: Sha256 | None
    client_id: str = Field(min_length=1, max_length=128)


def status_topic(prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    """The retained status topic."""
    return f"{prefix}/status"


def status_payload_factory(
    version: str, model_sha256: str | None, client_id: str
) -> Callable[[str], bytes]:
    """Build the ``status_payload(state) -> bytes`` callable the publisher needs; each call
    stamps the current time."""

    def payload(state: str) -> bytes:
        return StatusMessage.model_validate(
            {
                "state": state,
                "at": utc_now(),
                "version": version,
                "model_sha256": model_sha256,
                "client_id": client_id,
            }
        ).to_json()

    return payload


def parse_status(payload: bytes) -> StatusMessage:
    """Parse a status payload; raises MalformedMessageError."""
    try:
        return StatusMessage.model_validate_json(payload)
    except ValidationError as exc:
        raise MalformedMessageError(f"not a weldmon status: {first_errors(exc)}") from exc


# --- validation messages ---------------------------------------------------------------------


def first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in exc.errors()[:limit]
    ]
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
