"""The sensor log's reading moved to ``deploy.sensorlog`` (replay needs it too); this name
stays for code that still imports it from training."""

from deploy.segment.process import ARC_BRIDGE_S, ARC_CURRENT_A  # noqa: F401
from deploy.sensorlog import (  # noqa: F401
    OFFSET_SEARCH_S,
    OFFSET_STEP_S,
    SensorLog,
    SensorLogError,
    arc_intervals,
    audio_clock_offset,
    estimate_clock_offset,
    read_sensor_log,
)
