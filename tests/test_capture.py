"""SoundDeviceCapture against a real PulseAudio null sink, fed with real recordings."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from pydantic import ValidationError

from monitor.audio.blocks import AudioBlock
from monitor.audio.capture import DeviceLostError, SoundDeviceCapture
from monitor.audio.capture_thread import COALESCE_WAIT_S, CaptureThread, CoalescingReader
from monitor.audio.config import AudioConfig
from monitor.audio.devices import (
    DeviceNotFoundError,
    InputDevice,
    format_devices,
    list_input_devices,
    resolve_input_device,
)
from tests.support.data import Recording
from tests.support.pulse import PulseAudio

PULSE_DEVICE = "pulse"  # ALSA's PCM that records PulseAudio's default source
EXCERPT_START_S = 8.0  # s into a recording: inside the arc, where the audio is loudest
EXCERPT_S = 5.0  # s played per test: enough to find the lag, short enough for a fast suite
CAPTURE_MARGIN_S = 2.5  # s captured beyond the excerpt: PulseAudio's start-up and latency
READ_TIMEOUT_S = 0.5
MIN_CORRELATION = 0.99  # float32 null sink end to end: anything less means corrupted audio
MAX_CROSS_CHANNEL_CORRELATION = 0.5  # two different recordings are nearly uncorrelated
LOSS_DETECTION_LIMIT_S = 5.0  # s within which a removed or stalled device must be reported
REOPEN_LIMIT_S = 10.0


def excerpt(recording: Recording, rate: int) -> np.ndarray:
    """EXCERPT_S of the recording from EXCERPT_START_S, float32 mono at `rate`."""
    audio, file_rate = sf.read(recording.flac, dtype="float32")
    start = round(EXCERPT_START_S * file_rate)
    part = audio[start : start + round(EXCERPT_S * file_rate)]
    return soxr.resample(part, file_rate, rate).astype(np.float32) if rate != file_rate else part


def capture_for(capture: SoundDeviceCapture, seconds: float) -> list[AudioBlock]:
    """Every block captured during `seconds` of wall time."""
    blocks = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        block = capture.read(READ_TIMEOUT_S)
        if block is not None:
            blocks.append(block)
    return blocks


def wait_for_first_block(capture: SoundDeviceCapture) -> AudioBlock:
    deadline = time.monotonic() + LOSS_DETECTION_LIMIT_S
    while time.monotonic() < deadline:
        block = capture.read(READ_TIMEOUT_S)
        if block is not None:
            return block
    pytest.fail(f"no audio within {LOSS_DETECTION_LIMIT_S} s of opening")


def contiguous(blocks: list[AudioBlock]) -> np.ndarray:
    """The blocks' samples joined, after checking nothing was lost between them."""
    for before, after in itertools.pairwise(blocks):
        assert after.start_frame == before.end_frame, "gap in the sample clock"
    assert sum(b.dropped_frames for b in blocks) == 0
    return np.concatenate([b.samples for b in blocks])


def aligned_correlation(captured: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """(lag, Pearson r) of `reference` inside `captured`, the lag found by cross-correlation."""
    size = len(captured) + len(reference)
    spectrum = np.fft.rfft(captured, size) * np.conj(np.fft.rfft(reference, size))
    lag = int(np.argmax(np.fft.irfft(spectrum, size)[: len(captured)]))
    overlap = min(len(captured) - lag, len(reference))
    r = np.corrcoef(captured[lag : lag + overlap], reference[:overlap])[0, 1]
    return lag, float(r)


def pulse_settings(rate: int, channels: int, **extra: float) -> AudioConfig:
    return AudioConfig(device=PULSE_DEVICE, samplerate=rate, channels=channels, **extra)


@pytest.mark.audio
@pytest.mark.real_data
def test_capture_at_16k_mono_reproduces_a_played_recording(
    pulse: PulseAudio, recordings: list[Recording]
) -> None:
    pulse.create_sink("weld16k", 16_000, 1)
    reference = excerpt(recordings[0], 16_000)
    with SoundDeviceCapture(pulse_settings(16_000, 1)) as capture:
        first = wait_for_first_block(capture)
        player = pulse.play_array(reference[:, None], 16_000, "weld16k")
        blocks = [first, *capture_for(capture, EXCERPT_S + CAPTURE_MARGIN_S)]
        assert player.wait(REOPEN_LIMIT_S) == 0
    captured = contiguous(blocks)
    assert first.start_frame == 0
    assert {(b.sample_rate, b.channels, b.stream_epoch) for b in blocks} == {(16_000, 1, 1)}
    lag, r = aligned_correlation(captured[:, 0], reference)
    assert len(captured) - lag >= len(reference), "capture ended before the excerpt did"
    assert r > MIN_CORRELATION


@pytest.mark.audio
@pytest.mark.real_data
def test_capture_at_48k_stereo_keeps_each_channel_apart(
    pulse: PulseAudio, recordings: list[Recording], tmp_path: Path
) -> None:
    pulse.create_sink("weld48k", 48_000, 2)
    left, right = excerpt(recordings[0], 48_000), excerpt(recordings[-1], 48_000)
    stereo_wav = tmp_path / "two_runs.wav"
    sf.write(stereo_wav, np.stack([left, right], axis=1), 48_000, subtype="FLOAT")
    with SoundDeviceCapture(pulse_settings(48_000, 2)) as capture:
        first = wait_for_first_block(capture)
        player = pulse.play(stereo_wav, "weld48k")
        blocks = [first, *capture_for(capture, EXCERPT_S + CAPTURE_MARGIN_S)]
        assert player.wait(REOPEN_LIMIT_S) == 0
    captured = contiguous(blocks)
    assert captured.shape[1] == 2
    lag, r_left = aligned_correlation(captured[:, 0], left)
    overlap = min(len(captured) - lag, len(right))
    r_right = np.corrcoef(captured[lag : lag + overlap, 1], right[:overlap])[0, 1]
    r_crossed = np.corrcoef(captured[lag : lag + overlap, 0], right[:overlap])[0, 1]
    assert (r_left > MIN_CORRELATION, r_right > MIN_CORRELATION) == (True, True)
    assert abs(r_crossed) < MAX_CROSS_CHANNEL_CORRELATION


@pytest.mark.audio
@pytest.mark.real_data
def test_removed_sink_raises_device_lost_and_reopen_starts_a_new_epoch_with_audio(
    pulse: PulseAudio, recordings: list[Recording]
) -> None:
    pulse.create_sink("weldloss", 16_000, 1)
    reference = excerpt(recordings[1], 16_000)
    with SoundDeviceCapture(pulse_settings(16_000, 1)) as capture:
        wait_for_first_block(capture)
        pulse.remove_sink("weldloss")
        removed_at = time.monotonic()
        with pytest.raises(DeviceLostError, match="stopped"):
            capture_for(capture, LOSS_DETECTION_LIMIT_S)
        assert time.monotonic() - removed_at < LOSS_DETECTION_LIMIT_S
        assert capture.counters().device_losses == 1

        pulse.create_sink("weldloss", 16_000, 1)
        assert capture.wait_for_device(REOPEN_LIMIT_S, initial_backoff_s=0.2)
        first = wait_for_first_block(capture)
        player = pulse.play_array(reference[:, None], 16_000, "weldloss")
        blocks = [first, *capture_for(capture, EXCERPT_S + CAPTURE_MARGIN_S)]
        assert player.wait(REOPEN_LIMIT_S) == 0
    assert (first.stream_epoch, first.start_frame) == (2, 0)
    _, r = aligned_correlation(contiguous(blocks)[:, 0], reference)
    assert r > MIN_CORRELATION


@pytest.mark.audio
def test_wait_for_device_gives_up_after_max_wait_when_no_source_exists(
    pulse: PulseAudio,
) -> None:
    assert not pulse.sinks  # no sink, so no monitor source for the pulse PCM to record
    capture = SoundDeviceCapture(pulse_settings(16_000, 1))
    started = time.monotonic()
    with pytest.raises(DeviceLostError, match=r"did not come back within 1.5 s"):
        capture.wait_for_device(1.5, initial_backoff_s=0.2)
    assert 1.5 <= time.monotonic() - started < 1.5 + LOSS_DETECTION_LIMIT_S


@pytest.mark.audio
def test_wait_for_device_returns_false_at_once_when_asked_to_stop(pulse: PulseAudio) -> None:
    assert not pulse.sinks
    stop = threading.Event()
    stop.set()
    capture = SoundDeviceCapture(pulse_settings(16_000, 1))
    started = time.monotonic()
    assert capture.wait_for_device(math.inf, initial_backoff_s=10.0, stop=stop) is False
    assert time.monotonic() - started < LOSS_DETECTION_LIMIT_S


@pytest.mark.audio
def test_suspended_sink_is_reported_as_a_stall(pulse: PulseAudio) -> None:
    pulse.create_sink("weldstall", 16_000, 1)
    with SoundDeviceCapture(pulse_settings(16_000, 1, stall_timeout_s=1.0)) as capture:
        wait_for_first_block(capture)
        pulse.suspend_sink("weldstall")
        with pytest.raises(DeviceLostError, match="stall_timeout_s"):
            capture_for(capture, LOSS_DETECTION_LIMIT_S)


@pytest.mark.audio
def test_device_lost_keeps_being_raised_until_reopen(pulse: PulseAudio) -> None:
    pulse.create_sink("weldgone", 16_000, 1)
    with SoundDeviceCapture(pulse_settings(16_000, 1)) as capture:
        wait_for_first_block(capture)
        pulse.remove_sink("weldgone")
        with pytest.raises(DeviceLostError):
            capture_for(capture, LOSS_DETECTION_LIMIT_S)
        with pytest.raises(DeviceLostError):
            capture.read(READ_TIMEOUT_S)


@pytest.mark.audio
def test_counters_add_up_the_frames_handed_out(pulse: PulseAudio) -> None:
    pulse.create_sink("weldcount", 16_000, 1)
    with SoundDeviceCapture(pulse_settings(16_000, 1)) as capture:
        blocks = [wait_for_first_block(capture), *capture_for(capture, 1.0)]
        handed_out = sum(b.frames for b in blocks)
        counters = capture.counters()
    assert counters.frames_captured >= handed_out > 0
    assert (counters.dropped_frames, counters.nonfinite_samples, counters.stream_epoch) == (0, 0, 1)
    assert counters.last_block_monotonic is not None


@pytest.mark.audio
def test_a_slow_reader_loses_audio_only_as_counted_gaps_on_the_sample_clock(
    pulse: PulseAudio,
) -> None:
    pulse.create_sink("weldslow", 16_000, 1)
    settings = pulse_settings(16_000, 1, ring_s=0.2)
    with SoundDeviceCapture(settings) as capture:
        blocks = [wait_for_first_block(capture)]
        time.sleep(1.0)  # the 0.2 s ring overflows while nobody reads
        blocks += capture_for(capture, 0.5)
        counters = capture.counters()
    gaps = [b.dropped_frames for b in blocks]
    assert sum(gaps) == counters.dropped_frames > 0
    for before, after in itertools.pairwise(blocks):
        assert after.start_frame == before.end_frame + after.dropped_frames


@pytest.mark.audio
def test_nan_and_inf_reaching_the_device_are_zeroed_and_counted(pulse: PulseAudio) -> None:
    pulse.create_sink("weldnan", 16_000, 1)
    played = np.full((2 * 16_000, 1), 0.1, dtype=np.float32)
    played[::100] = np.nan  # a float32 sink passes non-finite samples through untouched
    played[50::100] = np.inf
    injected = int(np.count_nonzero(~np.isfinite(played)))
    with SoundDeviceCapture(pulse_settings(16_000, 1)) as capture:
        wait_for_first_block(capture)
        player = pulse.play_array(played, 16_000, "weldnan")
        blocks = capture_for(capture, 2.0 + CAPTURE_MARGIN_S)
        assert player.wait(REOPEN_LIMIT_S) == 0
        counted = capture.counters().nonfinite_samples
    assert all(np.isfinite(b.samples).all() for b in blocks)
    assert sum(b.nonfinite_samples for b in blocks) == counted
    assert injected // 2 < counted <= injected  # PulseAudio may clip the stream's edges


@pytest.mark.audio
def test_epoch_utc_is_close_to_the_wall_clock_at_opening(pulse: PulseAudio) -> None:
    pulse.create_sink("weldclock", 16_000, 1)
    opened_utc = time.time()
    with SoundDeviceCapture(pulse_settings(16_000, 1)) as capture:
        first = wait_for_first_block(capture)
    assert opened_utc - 0.5 < first.epoch_utc < time.time()


@pytest.mark.audio
def test_unknown_device_name_lists_the_input_devices_seen(pulse: PulseAudio) -> None:
    pulse.create_sink("weldlist", 16_000, 1)
    with pytest.raises(DeviceNotFoundError, match=r"no-such-mic(.|\n)*pulse"):
        SoundDeviceCapture(AudioConfig(device="no-such-mic")).open()


@pytest.mark.audio
def test_device_by_name_substring_resolves_the_pulse_pcm(pulse: PulseAudio) -> None:
    pulse.create_sink("weldname", 16_000, 1)
    by_name = resolve_input_device("puls")
    assert by_name.name == PULSE_DEVICE
    assert resolve_input_device(by_name.index) == by_name
    assert by_name in list_input_devices()


def test_format_devices_shows_one_row_per_device_with_its_rate() -> None:
    devices = [
        InputDevice(0, "pulse", "ALSA", 32, 44_100.0),
        InputDevice(3, "USB Audio CODEC: Audio (hw:1,0)", "ALSA", 2, 48_000.0),
    ]
    lines = format_devices(devices).splitlines()
    assert len(lines) == 3
    assert lines[2].split()[:2] == ["3", "USB"]
    assert "48000" in lines[2] and "44100" in lines[1]


def test_format_devices_says_when_there_are_none() -> None:
    assert format_devices([]) == "no audio input devices found"


@pytest.mark.parametrize(
    ("key", "value"),
    [("channels", 0), ("ring_s", float("nan")), ("stall_timeout_s", 0.0), ("samplerate", 1)],
)
def test_capture_settings_reject_bad_values_naming_the_key(key: str, value: float) -> None:
    with pytest.raises(ValidationError, match=key):
        AudioConfig(**{key: value})


def test_capture_settings_reject_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="sample_rate"):
        AudioConfig(sample_rate=16_000)  # type: ignore[call-arg]


@pytest.mark.audio
def test_the_reader_hands_out_blocks_of_two_callbacks_without_gaps(
    pulse: PulseAudio,
) -> None:
    pulse.create_sink("weldjoin", 48_000, 2)
    block_frames = 4_800  # audio.block_s 0.1 s at 48 kHz: two 50 ms callbacks
    with SoundDeviceCapture(pulse_settings(48_000, 2, callback_block_s=0.05)) as capture:
        wait_for_first_block(capture)
        reader = CoalescingReader(capture, block_frames, COALESCE_WAIT_S)
        blocks = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            block = reader.read(READ_TIMEOUT_S)
            if block is not None:
                blocks.append(block)
    contiguous(blocks)  # whole blocks keep the sample clock without gaps
    assert all(b.frames <= block_frames for b in blocks)
    # The ring wakes the reader once the block is whole (issue 21), so callbacks are joined
    # in the ring rather than by the reader's own second read.
    full = sum(b.frames == block_frames for b in blocks)
    assert full >= len(blocks) // 2  # most blocks are two callbacks long


@pytest.mark.audio
def test_the_capture_thread_hands_out_idle_blocks_until_a_weld_opens(pulse: PulseAudio) -> None:
    pulse.create_sink("weldidle", 48_000, 1)
    cfg = pulse_settings(48_000, 1, block_s=0.1, idle_block_s=0.5)

    async def collect() -> tuple[list[int], list[int]]:
        loop = asyncio.get_running_loop()
        thread = CaptureThread(cfg, loop)
        idle: list[int] = []
        busy: list[int] = []
        blocks: list[AudioBlock] = []
        thread.start()
        try:
            async for item in thread.until(asyncio.Event()):
                if not isinstance(item, AudioBlock):
                    continue
                blocks.append(item)
                (idle if thread.idle else busy).append(item.frames)
                if len(idle) == 6:
                    thread.idle = False  # what the daemon does once a station opens a weld
                if len(busy) == 12:
                    break
        finally:
            await asyncio.to_thread(thread.join, 5.0)
        contiguous(blocks)
        return idle, busy

    idle, busy = asyncio.run(collect())
    assert max(idle) == 24_000 and sum(f == 24_000 for f in idle[1:]) >= 3
    assert all(f <= 4_800 for f in busy[-8:])  # the block it was reading may still be idle
