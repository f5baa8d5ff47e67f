"""The ``audio:`` config section, declared once: what the capture opens, how it recovers, and
how channels map to stations. `SoundDeviceCapture` and the capture thread take it as is."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from deploy.strict_model import StrictModel
from monitor.events import StationName

MIN_SAMPLE_RATE_HZ = 8_000  # below this the model's band cannot be represented
MAX_SAMPLE_RATE_HZ = 384_000  # highest rate PortAudio host APIs commonly offer
MAX_CHANNELS = 64  # more than any sound card we expect; guards against a typo like 1000
DEFAULT_BLOCK_S = 0.1  # block handed to the pipeline (s): 10 blocks/s keeps latency small
# s per block while no station has a weld open: most of an idle daemon's cost is paid per
# block (docs/benchmarks.md, "The idle daemon"), so between welds blocks grow; a strike is
# then seen up to this much later (the weld's end, its alerts and its result are not: blocks
# are block_s again as soon as a weld opens). Verdicts do not depend on how audio is cut.
DEFAULT_IDLE_BLOCK_S = 0.5
MAX_BLOCK_S = 1.0
DEFAULT_RING_S = 10.0  # s of audio buffered: rides out a multi-second consumer hiccup (GC,
# a slow inference batch) without dropping; costs 10 s * 48 kHz * 8 ch * 4 B = 15 MB at most
MAX_RING_S = 600.0
DEFAULT_DEVICE_RETRY_MIN_S = 0.5  # first wait before reopening a lost device
DEFAULT_DEVICE_RETRY_MAX_S = 5.0  # cap: a re-plugged device is found within 5 s
DEFAULT_STALL_TIMEOUT_S = 2.0  # s without a callback, once audio flowed, before the device
# counts as lost: 10-100x a normal callback period, short enough to reopen within a weld
DEFAULT_FIRST_AUDIO_TIMEOUT_S = 5.0  # s from opening to the first callback before the device
# counts as lost; PulseAudio's ALSA plugin takes 0.5-1.5 s to deliver its first block
DEFAULT_CALLBACK_BLOCK_S = 0.05  # s per PortAudio callback: far less CPU than PortAudio's
# own few-ms choice (docs/benchmarks.md, "audio capture CPU"); one gate frame (50 ms) per
# callback, and at most 50 ms waits in the device. 0.1 s would cost less idle, but through
# PulseAudio's ALSA plugin at 16 kHz it corrupted the captured audio (test_capture's
# correlation fell from > 0.99 to 0.983), so it stays 0.05 (docs/benchmarks.md, "The idle daemon")
MAX_CALLBACK_BLOCK_S = 1.0  # s: longer callbacks would delay stall detection and alerts
# Exact digital zeros for this long on an open stream: no real microphone is that quiet (its
# own self-noise alone sets the LSBs), so the capsule, cable or phantom power is gone. A
# minute rides out a muted preamp being switched without crying wolf.
DEFAULT_SILENCE_ALARM_S = 60.0

ChannelMode = Literal["mix", "per_channel"]


class StationConfig(StrictModel):
    """A station entry that overrides how its welds are judged: `threshold` replaces the
    artifact's decision threshold (label = p_defect >= threshold), `alert_threshold` the level
    at which the rolling p_defect raises the early alert (default: the decision threshold).
    Changing either takes effect on reload, for the welds that start afterwards."""

    name: StationName
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    alert_threshold: float | None = Field(None, ge=0.0, le=1.0)


# A station is its name, or a mapping with its name and threshold overrides.
StationEntry = StationName | StationConfig


class AudioConfig(StrictModel):
    """The capture device, its recovery, and how its channels map to stations."""

    device: int | str | None = None  # PortAudio index or name substring; None: default input
    # Hz; None: the device's default rate
    samplerate: int | None = Field(None, ge=MIN_SAMPLE_RATE_HZ, le=MAX_SAMPLE_RATE_HZ)
    channels: int = Field(1, ge=1, le=MAX_CHANNELS)
    channel_mode: ChannelMode = "mix"
    # names (or {name, threshold, alert_threshold} entries); [] -> "station1", ...
    stations: list[StationEntry] = Field(default_factory=list)
    block_s: float = Field(DEFAULT_BLOCK_S, gt=0.0, le=MAX_BLOCK_S)
    # s per block while no station has a weld open (never below block_s: see block_frames)
    idle_block_s: float = Field(DEFAULT_IDLE_BLOCK_S, gt=0.0, le=MAX_BLOCK_S)
    ring_s: float = Field(DEFAULT_RING_S, gt=0.0, le=MAX_RING_S)
    retry_min_s: float = Field(DEFAULT_DEVICE_RETRY_MIN_S, gt=0.0)
    retry_max_s: float = Field(DEFAULT_DEVICE_RETRY_MAX_S, gt=0.0)
    stall_timeout_s: float = Field(DEFAULT_STALL_TIMEOUT_S, gt=0.0)
    first_audio_timeout_s: float = Field(DEFAULT_FIRST_AUDIO_TIMEOUT_S, gt=0.0)
    # s of audio per PortAudio callback; 0: PortAudio picks (often a few ms: more CPU)
    callback_block_s: float = Field(DEFAULT_CALLBACK_BLOCK_S, ge=0.0, le=MAX_CALLBACK_BLOCK_S)
    latency: Literal["low", "high"] = "high"  # high: larger device buffers, fewer overflows
    # s of exact digital silence on an open stream before the "probable dead microphone"
    # error event; null: never alarm
    silence_alarm_s: float | None = Field(DEFAULT_SILENCE_ALARM_S, gt=0.0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        wanted = 1 if self.channel_mode == "mix" else self.channels
        if self.stations and len(self.stations) != wanted:
            raise ValueError(
                f"stations: {self.channel_mode} needs {wanted} station name(s), "
                f"got {len(self.stations)}"
            )
        names = self.station_names()
        if len(set(names)) != len(names):
            raise ValueError("stations: names must be unique")
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("retry_max_s must not be below retry_min_s")
        return self

    def block_frames(self, sample_rate: int, idle: bool) -> int:
        """Frames per block handed to the pipeline: ``idle_block_s`` while no weld is open
        (never less than ``block_s``), ``block_s`` otherwise."""
        seconds = max(self.block_s, self.idle_block_s) if idle else self.block_s
        return max(1, round(seconds * sample_rate))

    def station_names(self, channels: int | None = None) -> list[str]:
        """The station names in channel order (defaults: station1, station2, ...)."""
        if self.stations:
            return [e if isinstance(e, str) else e.name for e in self.stations]
        n = 1 if self.channel_mode == "mix" else (channels or self.channels)
        return [f"station{i + 1}" for i in range(n)]

    def channel_stations(self, channels: int | None = None) -> list[str]:
        """The station each input channel feeds (every channel feeds the one `mix` station)."""
        names = self.station_names(channels)
        if self.channel_mode == "per_channel":
            return names
        return [names[0]] * (channels or self.channels)

    def station_overrides(self) -> dict[str, StationConfig]:
        """The stations whose entries override a threshold, by name."""
        return {
            e.name: e
            for e in self.stations
            if isinstance(e, StationConfig)
            and (e.threshold is not None or e.alert_threshold is not None)
        }

    def without_overrides(self) -> AudioConfig:
        """This section with every station entry reduced to its name: what a reload compares
        to tell a threshold change (applied) from a change to the capture (needs a restart)."""
        return self.model_copy(update={"stations": self.station_names() if self.stations else []})
