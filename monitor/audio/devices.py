"""The audio input devices PortAudio sees, and choosing one by index or name.

PortAudio freezes its device list when it is initialised, so a device plugged in (or a
PulseAudio sink created) later is invisible until `refresh_portaudio` re-initialises it
(python-sounddevice issues #47, #125, #382).
"""

from __future__ import annotations

from dataclasses import dataclass

import sounddevice as sd

from deploy.errors import WeldmonError


class AudioDeviceError(WeldmonError):
    """An audio input device cannot be found, opened or kept open."""


class DeviceNotFoundError(AudioDeviceError):
    """No input device matches the requested index or name (the message lists those seen)."""


@dataclass(frozen=True, slots=True)
class InputDevice:
    """One device PortAudio can record from."""

    index: int  # PortAudio's index; only valid until PortAudio is re-initialised
    name: str
    host_api: str  # e.g. "ALSA"
    max_input_channels: int
    default_samplerate: float  # Hz


def refresh_portaudio() -> None:
    """Terminate and re-initialise PortAudio so it enumerates devices again.

    Closes every stream this process has open: call it only when none should survive. Uses
    sounddevice's private `_terminate`/`_initialize`, the only way it offers to re-enumerate.
    """
    try:
        sd._terminate()
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot terminate PortAudio: {exc}") from exc
    finally:
        # Initialise even when terminate failed: sounddevice is unusable while uninitialised.
        try:
            sd._initialize()
        except sd.PortAudioError as exc:
            raise AudioDeviceError(f"cannot re-initialise PortAudio: {exc}") from exc


def _to_input_device(info: dict, host_apis: tuple[dict, ...]) -> InputDevice:
    return InputDevice(
        index=int(info["index"]),
        name=str(info["name"]),
        host_api=str(host_apis[info["hostapi"]]["name"]),
        max_input_channels=int(info["max_input_channels"]),
        default_samplerate=float(info["default_samplerate"]),
    )


def list_input_devices(*, refresh: bool = False) -> list[InputDevice]:
    """Every device with at least one input channel, in PortAudio's order.

    With `refresh`, PortAudio is re-initialised first (closing open streams) so devices that
    appeared since it started are listed too.
    """
    if refresh:
        refresh_portaudio()
    try:
        devices = sd.query_devices()
        host_apis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot list audio devices: {exc}") from exc
    return [_to_input_device(d, host_apis) for d in devices if d["max_input_channels"] > 0]


def format_devices(devices: list[InputDevice]) -> str:
    """A table of input devices for `weldmon devices` (one line per device)."""
    if not devices:
        return "no audio input devices found"
    header = ("index", "name", "host API", "in ch", "default Hz")
    rows = [
        (str(d.index), d.name, d.host_api, str(d.max_input_channels), f"{d.default_samplerate:g}")
        for d in devices
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    head = "  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True))
    return "\n".join(line.rstrip() for line in [head, *lines])


def resolve_input_device(spec: int | str | None) -> InputDevice:
    """The input device for `spec`: a PortAudio index, a name substring, or None (default).

    Matching is sounddevice's: an exact name wins, otherwise a substring must match exactly
    one input device (case-insensitive). Raises DeviceNotFoundError listing the input devices
    seen when nothing (or more than one device) matches.
    """
    try:
        info = sd.query_devices(spec, kind="input")
        host_apis = sd.query_hostapis()
    except (ValueError, sd.PortAudioError) as exc:
        try:
            seen = format_devices(list_input_devices())
        except AudioDeviceError as list_exc:
            seen = f"(device list unavailable: {list_exc})"
        wanted = "the default input device" if spec is None else f"input device {spec!r}"
        raise DeviceNotFoundError(f"{wanted} not found ({exc}); input devices:\n{seen}") from exc
    return _to_input_device(info, host_apis)
