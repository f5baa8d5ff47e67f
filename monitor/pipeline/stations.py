"""Channels -> stations: `mix` averages every channel into one station, `per_channel` makes
each channel its own station with its own welds.

Mixing uses `deploy.windows.mix_channels`, the artifact's own rule, so a multichannel file
replayed in `mix` mode is averaged exactly as the artifact's `forward` averages it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from deploy.errors import WeldmonError
from deploy.windows import mix_channels

ChannelMode = Literal["mix", "per_channel"]


class StationLayoutError(WeldmonError):
    """The audio's channel count does not fit the configured stations."""


class StationSplitter:
    """Splits float32 [frames, channels] blocks into one mono float32 array per station.

    Ownership: the returned arrays are new (contiguous) arrays the caller may keep.
    """

    def __init__(self, mode: ChannelMode, stations: list[str]) -> None:
        if not stations:
            raise StationLayoutError("at least one station is needed")
        if mode == "mix" and len(stations) != 1:
            raise StationLayoutError(f"mix mode has one station, got {stations}")
        self.mode = mode
        self.stations = list(stations)

    def check_channels(self, channels: int) -> None:
        """Raise StationLayoutError unless `channels` fits the layout."""
        if self.mode == "per_channel" and channels != len(self.stations):
            raise StationLayoutError(
                f"per_channel mode with {len(self.stations)} stations {self.stations} needs "
                f"{len(self.stations)} channels, the audio has {channels}"
            )

    @property
    def resampler_channels(self) -> int:
        """Channels of the resampler fed by `resampler_input` (one per station)."""
        return len(self.stations)

    def resampler_input(self, samples: np.ndarray) -> np.ndarray:
        """[frames, channels] -> what the stations' one resampler takes: mono [frames] for one
        station, [frames, stations] (C-contiguous float32, one column per station) for more."""
        if len(self.stations) == 1:
            (mono,) = self.split(samples)
            return mono
        if samples.ndim != 2:
            raise StationLayoutError(f"samples must be [frames, channels], got {samples.shape}")
        self.check_channels(samples.shape[1])
        return np.ascontiguousarray(samples, dtype=np.float32)

    def split(self, samples: np.ndarray) -> list[np.ndarray]:
        """[frames, channels] -> one mono [frames] array per station, in station order."""
        if samples.ndim != 2:
            raise StationLayoutError(f"samples must be [frames, channels], got {samples.shape}")
        self.check_channels(samples.shape[1])
        if self.mode == "per_channel":
            return [np.ascontiguousarray(samples[:, c]) for c in range(samples.shape[1])]
        if samples.shape[1] == 1:
            return [np.ascontiguousarray(samples[:, 0])]
        return [mix_channels(np.ascontiguousarray(samples.T))]
