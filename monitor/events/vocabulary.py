"""The wire vocabularies, each declared once: why a weld ended (`EndReason`), why a verdict is
degraded (`DegradedReason`), what an error event is about (`ErrorCode`) and where a
threshold came from (`ThresholdSource`). Each is listed in full in the JSON Schema and
docs/mqtt.md. Import them from ``monitor.events``, whose `OpenDegradedReason` and
`OpenErrorCode` also accept the reasons and codes a newer daemon adds.
"""

from __future__ import annotations

from enum import StrEnum


class EndReason(StrEnum):
    """Why a weld ended."""

    GATE = "gate"  # the arc gate saw the arc stop
    CRACKLE = "crackle"  # the crackle segmenter heard the arc stop
    ARC = "arc"  # the learned arc segmenter heard the arc stop
    CURRENT = "current"  # the welder's arc current stopped (process data)
    TRIGGER = "trigger"  # a stop trigger arrived
    FILE_END = "file_end"  # the replayed file ended
    DEVICE_LOST = "device_lost"  # the sound device stopped delivering audio
    SHUTDOWN = "shutdown"  # the daemon was stopped
    MAX_LENGTH = "max_length"  # the segmenter cut the weld at its longest (max_weld_s)


class DegradedReason(StrEnum):
    """Why a verdict is less trustworthy than usual (see docs/mqtt.md)."""

    DROPPED_AUDIO = "dropped_audio"  # frames of the weld were lost (dropped_frames says how many)
    DEVICE_LOST = "device_lost"  # the device went away during the weld
    INTERRUPTED = "interrupted"  # the daemon stopped during the weld
    NONFINITE_SAMPLES = "nonfinite_samples"  # NaN/Inf samples were replaced by silence
    TOO_SHORT = "too_short"  # shorter than one window: judged on nothing
    INFERENCE_FAILED = "inference_failed"  # some windows could not be judged
    UNREADABLE_AUDIO = "unreadable_audio"  # replay: the file broke off during the weld


class ErrorCode(StrEnum):
    """What an ``error`` event is about."""

    DEVICE_LOST = "device_lost"  # the sound device stopped delivering audio
    DEAD_MICROPHONE = "dead_microphone"  # an input channel delivered exact silence for long
    RELOAD_FAILED = "reload_failed"  # a model reload was refused; the old model runs on
    CLIP_FAILED = "clip_failed"  # a defect clip could not be written
    HTTP_UNAVAILABLE = "http_unavailable"  # /metrics and /healthz could not be served
    BAD_AUDIO = "bad_audio"  # replay: a file could not be read
    NO_PROCESS_DATA = "no_process_data"  # replay in current mode: no usable sensor log
    INTERRUPTED_WELDS = "interrupted_welds"  # welds a killed daemon left open got results
    OUTBOX_DEGRADED = "outbox_degraded"  # the outbox cannot be written (events held in memory)
    OPCUA_UNAVAILABLE = "opcua_unavailable"  # the OPC UA server could not start
    OPCUA_FAILED = "opcua_failed"  # the running OPC UA server failed
    # a station's taught threshold was voided (another model) or its file was unusable
    # (corrupt, foreign, another version): the artifact's threshold judges
    TEACH_IN_VOID = "teach_in_void"
    # a taught station's recent good welds drifted from its taught reference (once per
    # episode, monitor/teach/drift.py): check the cell and teach it again
    RECALIBRATE = "recalibrate"


class ThresholdSource(StrEnum):
    """Where the threshold that judged a weld came from."""

    ARTIFACT = "artifact"  # the deploy artifact's own threshold
    CONFIG = "config"  # the station's entry in audio.stations overrides it
    TEACH_IN = "teach_in"  # the station's accepted teach-in (monitor/teach)
