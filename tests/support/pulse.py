"""A private PulseAudio server with null sinks: a real sound device without sound hardware.

A file played into a null sink comes out of the sink's monitor source; PortAudio records it
through ALSA's `pulse` PCM (libasound2-plugins, defined in
/usr/share/alsa/alsa.conf.d/50-pulseaudio.conf), which records from the server's default
source. So `create_sink` also makes ``<sink>.monitor`` the default source.

The server runs as a user daemon (not --system, even as root) on a socket in a temporary
folder; PULSE_SERVER / PULSE_RUNTIME_PATH / PULSE_STATE_PATH point this process and its
subprocesses at it. Without the binaries the tests skip locally and fail with CI=true.

`PulseAudio` also works outside pytest (`bench/capture_cpu.py` uses it).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SERVER_START_TIMEOUT_S = 10.0  # s for the daemon to answer `pactl info` (usually < 0.5 s)
SERVER_STOP_TIMEOUT_S = 5.0  # s to exit after SIGTERM before it is killed
PACTL_TIMEOUT_S = 10.0  # s for one pactl command; the server answers in milliseconds
POLL_S = 0.05  # s between readiness checks
SINK_RATES_HZ = (16_000, 44_100, 48_000)  # rates the tests use; others are refused as typos
MAX_SINK_CHANNELS = 8  # the most channels the tests and benches ask for
# The channel positions the ALSA `pulse` plugin records with (PulseAudio's "alsa" map,
# pa_channel_map_init_auto), longest defined prefix first; counts without an ALSA map get
# the shorter map extended with aux0, aux1, ... (checked with one tone per channel, 1-8 ch).
ALSA_CHANNEL_MAPS = {
    8: "front-left,front-right,rear-left,rear-right,front-center,lfe,side-left,side-right",
    6: "front-left,front-right,rear-left,rear-right,front-center,lfe",
    5: "front-left,front-right,rear-left,rear-right,front-center",
    4: "front-left,front-right,rear-left,rear-right",
    2: "front-left,front-right",
    1: "mono",
}
REQUIRED_BINARIES = ("pulseaudio", "pactl", "paplay")
PR_SET_PDEATHSIG = 1  # linux/prctl.h: signal the child when its parent dies
ALSA_PULSE_PLUGIN_GLOB = "/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so"


class PulseAudioError(RuntimeError):
    """The private PulseAudio server could not be started or did not obey a command."""


def missing_requirements() -> list[str]:
    """What this machine lacks to run the audio tests (empty when nothing is missing)."""
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if not list(Path("/").glob(ALSA_PULSE_PLUGIN_GLOB.lstrip("/"))):
        missing.append("ALSA pulse plugin (Debian package libasound2-plugins)")
    try:
        import sounddevice  # noqa: F401  (needs libportaudio2)
    except OSError:
        missing.append("PortAudio (Debian package libportaudio2)")
    return missing


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test process dies, even by SIGKILL, so a
    killed test run leaves no daemon behind on a shared machine (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def reinitialise_portaudio() -> None:
    """Make an already-initialised PortAudio re-enumerate devices (it froze them at import)."""
    if "sounddevice" in sys.modules:
        sd = sys.modules["sounddevice"]
        sd._terminate()
        sd._initialize()


def capture_channel_map(channels: int) -> str:
    """The channel map the capture side (ALSA `pulse` plugin) uses for `channels` channels.

    A sink, a player and a recorder whose maps differ are remixed by PulseAudio: with its
    default maps an 8-channel sink smeared each channel into its neighbours and silenced the
    LFE one (a station that never saw a weld). With one map on all three sides every channel
    is copied unchanged, so channel i of the played file is channel i of the capture.
    """
    base = max(n for n in ALSA_CHANNEL_MAPS if n <= channels)
    extra = [f"aux{i}" for i in range(channels - base)]
    return ",".join([ALSA_CHANNEL_MAPS[base], *extra])


class PulseAudio:
    """A private PulseAudio daemon and the null sinks created on it."""

    def __init__(self, workdir: Path, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.workdir = workdir
        self.process = process
        self.log_path = log_path
        self.socket = workdir / "native"
        self.sinks: dict[str, int] = {}  # sink name -> module index (for unloading)
        self.channel_maps: dict[str, str] = {}  # sink name -> its channel_map argument

    @property
    def env(self) -> dict[str, str]:
        """Variables a client (this process, `weldmon run`, paplay) needs to use this server."""
        return {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(self.workdir / "runtime"),
            "PULSE_STATE_PATH": str(self.workdir / "state"),
            # No cookie is needed (auth-anonymous); this keeps clients from writing ~/.config.
            "PULSE_COOKIE": str(self.workdir / "cookie"),
        }

    def subprocess_env(self) -> dict[str, str]:
        """os.environ plus `env`: pass as ``env=`` to a subprocess that should record here."""
        return {**os.environ, **self.env}

    @classmethod
    def start(cls, workdir: Path) -> PulseAudio:
        """Start a daemon whose files all live under `workdir`; wait until it answers."""
        for sub in ("runtime", "state", "home"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        config = workdir / "server.pa"
        config.write_text(
            f"load-module module-native-protocol-unix socket={workdir / 'native'} "
            "auth-anonymous=1\n"
        )
        log_path = workdir / "pulseaudio.log"
        env = {
            **os.environ,
            "HOME": str(workdir / "home"),  # the daemon writes its cookie under $HOME
            "PULSE_RUNTIME_PATH": str(workdir / "runtime"),
            "PULSE_STATE_PATH": str(workdir / "state"),
        }
        env.pop("PULSE_SERVER", None)
        command = [
            "pulseaudio",
            "--daemonize=no",
            "--system=false",  # a per-user daemon even though the tests run as root
            "--exit-idle-time=-1",  # stay up while no client is connected
            "--use-pid-file=no",  # several test sessions may run side by side
            "--disable-shm=yes",  # nothing shared with other servers on the machine
            "-n",  # no default.pa: only what server.pa loads
            "-F",
            str(config),
            "--log-target=stderr",
            "--log-level=notice",
        ]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=env,
                preexec_fn=_die_with_parent,
            )
        server = cls(workdir, process, log_path)
        server._wait_until_ready()
        return server

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PulseAudioError(
                    f"pulseaudio exited ({self.process.returncode}): {self.log()}"
                )
            probe = subprocess.run(
                ["pactl", "info"], env=self.subprocess_env(), capture_output=True, check=False
            )
            if probe.returncode == 0:
                return
            time.sleep(POLL_S)
        self.stop()
        raise PulseAudioError(
            f"pulseaudio did not answer in {SERVER_START_TIMEOUT_S} s: {self.log()}"
        )

    def log(self) -> str:
        """The daemon's log so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-4000:]

    def pactl(self, *args: str) -> str:
        """Run one pactl command against this server; return its stdout."""
        done = subprocess.run(
            ["pactl", *args],
            env=self.subprocess_env(),
            capture_output=True,
            text=True,
            timeout=PACTL_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise PulseAudioError(f"pactl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def create_sink(self, name: str, rate: int, channels: int) -> str:
        """Create a null sink and make its monitor the default source; return the source name."""
        if rate not in SINK_RATES_HZ:
            raise ValueError(f"rate must be one of {SINK_RATES_HZ}, got {rate}")
        if not 1 <= channels <= MAX_SINK_CHANNELS:
            raise ValueError(f"channels must be 1..{MAX_SINK_CHANNELS}, got {channels}")
        if name in self.sinks:
            raise ValueError(f"sink {name!r} already exists")
        channel_map = capture_channel_map(channels)
        module = self.pactl(
            "load-module",
            "module-null-sink",
            f"sink_name={name}",
            f"rate={rate}",
            f"channels={channels}",
            f"channel_map={channel_map}",
            "format=float32le",  # no quantisation between the played file and the capture
        )
        self.sinks[name] = int(module.strip())
        self.channel_maps[name] = channel_map
        source = f"{name}.monitor"
        self.pactl("set-default-source", source)
        return source

    def remove_sink(self, name: str) -> None:
        """Unload a sink created by `create_sink` (streams recording from it stop)."""
        module = self.sinks.pop(name)
        self.channel_maps.pop(name, None)
        self.pactl("unload-module", str(module))

    def suspend_sink(self, name: str, suspended: bool = True) -> None:
        """Suspend (or resume) a sink: its monitor stops delivering audio but stays listed."""
        self.pactl("suspend-sink", name, "1" if suspended else "0")

    def play(self, path: Path, sink: str) -> subprocess.Popen[bytes]:
        """Start playing an audio file into `sink`; the caller waits for or kills the process.

        paplay's messages go to ``<workdir>/paplay.log`` (a pipe nobody reads would leak).
        """
        command = ["paplay", "-d", sink]
        channel_map = self.channel_maps.get(sink)
        if channel_map is not None and sf.info(str(path)).channels == channel_map.count(",") + 1:
            # The same map as the sink: PulseAudio then copies channels instead of remixing.
            command.append(f"--channel-map={channel_map}")
        with (self.workdir / "paplay.log").open("ab") as log_file:
            return subprocess.Popen(
                [*command, str(path)],
                env=self.subprocess_env(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )

    def play_array(self, samples: np.ndarray, rate: int, sink: str) -> subprocess.Popen[bytes]:
        """Play float32 ``[frames, channels]`` audio into `sink` (via a WAV in the workdir)."""
        handle, name = tempfile.mkstemp(suffix=".wav", dir=self.workdir)
        os.close(handle)
        sf.write(name, samples, rate, subtype="FLOAT")
        return self.play(Path(name), sink)

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL if it lingers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def pulse_server() -> Iterator[PulseAudio]:
    """A private PulseAudio daemon for the whole session; this process's env points at it."""
    missing = missing_requirements()
    if missing:
        message = f"audio tests need: {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: the audio tests are required, not optional)")
        pytest.skip(message)
    # A short path: unix socket paths are limited to 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="weldmon-pulse-"))
    server = PulseAudio.start(workdir)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.env.items():
            patch.setenv(key, value)
        reinitialise_portaudio()  # PortAudio may have enumerated devices before the server ran
        try:
            yield server
        finally:
            server.stop()
    reinitialise_portaudio()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def pulse(pulse_server: PulseAudio) -> Iterator[PulseAudio]:
    """The session's PulseAudio server; sinks a test creates are removed after it."""
    before = set(pulse_server.sinks)
    yield pulse_server
    for name in set(pulse_server.sinks) - before:
        pulse_server.remove_sink(name)
