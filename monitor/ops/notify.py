"""The systemd notify protocol, and the gate that decides when the watchdog may be fed.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (an AF_UNIX datagram socket; a name
starting with ``@`` is in the abstract namespace) and, with ``WatchdogSec=``,
``$WATCHDOG_USEC``. The daemon sends ``READY=1`` once the model is loaded and audio flows,
``STATUS=...`` with a one-line summary, ``WATCHDOG=1`` while `WatchdogGate` says the pipeline
is alive, and ``STOPPING=1`` on shutdown. Outside systemd (no ``$NOTIFY_SOCKET``) every call
is a no-op, so the same code runs under a terminal, replay and tests.

Hand-written rather than a library: the protocol is one ``sendto`` of ``KEY=value`` lines
(sd_notify(3)); ``sdnotify`` on PyPI is unmaintained since 2019 and ``systemd-python`` needs
the libsystemd headers and a compiler to install, which a monitor box should not need.

The watchdog is what turns "stuck" into "restarted": pings stop when audio stops arriving
(and the capture layer is not visibly retrying a lost device) or when the oldest window
waiting for inference is too old; systemd then kills the service after ``WatchdogSec`` and
``Restart=on-failure`` starts it again. Pings are sent from the event loop, so a blocked loop
stops them too.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from deploy.errors import WeldmonError

# sd_notify(3): ping at half the timeout so one late ping (a GC pause, a slow batch) is not
# fatal; systemd's own helpers use the same ratio.
WATCHDOG_PING_FRACTION = 0.5
USEC_PER_S = 1_000_000
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL for file paths.
MAX_SOCKET_PATH_BYTES = 107
MAX_STATUS_CHARS = 200  # one readable line in `systemctl status`; longer text is cut
DEFAULT_MAX_AUDIO_AGE_S = 5.0  # no block for 5 s: 50 capture blocks missed, capture is stuck
DEFAULT_MAX_PENDING_AGE_S = 30.0  # a window waiting 30 s: inference fell far behind or hung
# A device retry loop that has not tried for this long is itself stuck (the capture layer
# retries at most every audio.retry_max_s = 5 s by default).
DEFAULT_MAX_DEVICE_ATTEMPT_AGE_S = 30.0
WITHHELD_LOG_INTERVAL_S = 10.0  # one log line per 10 s while pings are withheld

log = structlog.get_logger(__name__)


class NotifyError(WeldmonError):
    """``$NOTIFY_SOCKET`` or ``$WATCHDOG_USEC`` holds something this protocol cannot use."""


def _socket_address(value: str) -> str:
    if value.startswith("@"):
        address = "\0" + value[1:]  # abstract namespace: leading NUL, no file
    elif value.startswith("/"):
        address = value
    else:
        # systemd >= 254 may also pass "vsock:CID:PORT" (VMs); a Linux box never sees that.
        raise NotifyError(f"NOTIFY_SOCKET: {value!r} is not an AF_UNIX path or @abstract name")
    if len(address.encode()) > MAX_SOCKET_PATH_BYTES:
        raise NotifyError(f"NOTIFY_SOCKET: {value!r} is longer than an AF_UNIX address allows")
    return address


class Notifier:
    """Sends sd_notify messages to systemd; every method is a no-op without a socket.

    A failed send is logged and counted in ``send_failures``, never raised: losing a
    ``STATUS=`` line must not stop a weld monitor, and a lost ``WATCHDOG=1`` is exactly what
    the watchdog is there to notice.
    """

    def __init__(self, socket_path: str | None, watchdog_usec: int | None = None) -> None:
        """`socket_path`: ``$NOTIFY_SOCKET`` (None: disabled); `watchdog_usec`: the
        watchdog timeout in microseconds (None: no watchdog)."""
        self._address = _socket_address(socket_path) if socket_path else None
        if watchdog_usec is not None and watchdog_usec <= 0:
            raise NotifyError(f"WATCHDOG_USEC: {watchdog_usec} is not a positive integer")
        self._watchdog_usec = watchdog_usec
        self.sent = 0
        self.send_failures = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for through the environment (``os.environ`` by default).

        ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; any other
        process (a child that inherited the environment) gets no watchdog.
        """
        env = os.environ if environ is None else environ
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if raw and (pid is None or pid == str(os.getpid())):
            try:
                usec = int(raw)
            except ValueError as exc:
                raise NotifyError(f"WATCHDOG_USEC: {raw!r} is not an integer") from exc
        return cls(env.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        """Whether systemd is listening (a notify socket was given)."""
        return self._address is not None

    def watchdog_timeout_s(self) -> float | None:
        """systemd's watchdog timeout (``WatchdogSec``) in seconds; None without a watchdog."""
        if self._watchdog_usec is None or not self.enabled:
            return None
        return self._watchdog_usec / USEC_PER_S

    def watchdog_interval_s(self) -> float | None:
        """How often to send ``WATCHDOG=1`` (half the timeout), in seconds; None: no pings."""
        timeout = self.watchdog_timeout_s()
        return None if timeout is None else timeout * WATCHDOG_PING_FRACTION

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up finished (model loaded, audio flowing)."""
        return self._send("READY=1", status)

    def status(self, text: str) -> bool:
        """``STATUS=text``: a one-line summary shown by ``systemctl status``."""
        return self._send(None, text)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the service is alive; call only when `WatchdogGate` allows it."""
        return self._send("WATCHDOG=1", None)

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown began (systemd stops expecting watchdog pings)."""
        return self._send("STOPPING=1", status)

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1``: a reload (SIGHUP) began; send `ready` when it has finished."""
        return self._send("RELOADING=1", status)

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: start-up (or stop) needs `seconds` more, e.g. while the
        daemon waits at boot for a sound device that is not plugged in yet."""
        if not math.isfinite(seconds) or seconds <= 0:
            raise NotifyError(f"extend_timeout: {seconds} is not a positive number of seconds")
        return self._send(f"EXTEND_TIMEOUT_USEC={round(seconds * USEC_PER_S)}", None)

    def _send(self, state: str | None, status: str | None) -> bool:
        if self._address is None:
            return False
        lines = [] if state is None else [state]
        if status is not None:
            # A newline would start a new KEY=value assignment: keep the summary on one line.
            one_line = " ".join(status.split())[:MAX_STATUS_CHARS]
            lines.append(f"STATUS={one_line}")
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError as exc:
            self.send_failures += 1
            log.warning("notify_failed", payload=message.decode(), error=str(exc))
            return False
        self.sent += 1
        return True


@dataclass(frozen=True)
class GateVerdict:
    """Whether to ping the watchdog now, and why not."""

    ping: bool
    reasons: tuple[str, ...]  # empty when ping is True


@dataclass(frozen=True)
class WatchdogGate:
    """Pure rule: is the pipeline alive enough to feed systemd's watchdog?

    All times are ``time.monotonic()`` seconds from the same clock. Audio counts as flowing
    when the latest block is at most `max_audio_age_s` old, or, while the capture layer
    waits for a lost device, when its latest open attempt is at most
    `max_device_attempt_age_s` old (a lost microphone is reported and retried, not fixed by a
    restart). Inference keeps up when no window has waited longer than `max_pending_age_s`.
    """

    max_audio_age_s: float = DEFAULT_MAX_AUDIO_AGE_S
    max_pending_age_s: float = DEFAULT_MAX_PENDING_AGE_S
    max_device_attempt_age_s: float = DEFAULT_MAX_DEVICE_ATTEMPT_AGE_S

    def __post_init__(self) -> None:
        for name in ("max_audio_age_s", "max_pending_age_s", "max_device_attempt_age_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise NotifyError(f"WatchdogGate.{name}: {value} is not a positive number")

    def verdict(
        self,
        now: float,
        last_audio_at: float | None,
        oldest_pending_at: float | None,
        last_device_attempt_at: float | None = None,
    ) -> GateVerdict:
        """Judge one moment. `last_audio_at`: latest audio block (None: none yet);
        `oldest_pending_at`: when the oldest window still awaiting inference was queued
        (None: nothing pending); `last_device_attempt_at`: latest attempt to open a lost
        device (None: the device is not being waited for)."""
        reasons = []
        audio_age = _age(now, last_audio_at)
        attempt_age = _age(now, last_device_attempt_at)
        if audio_age > self.max_audio_age_s and attempt_age > self.max_device_attempt_age_s:
            if last_audio_at is None:
                reasons.append("no audio yet")
            else:
                reasons.append(f"no audio for {audio_age:.1f} s (limit {self.max_audio_age_s:g} s)")
        pending_age = _age(now, oldest_pending_at)
        if oldest_pending_at is not None and pending_age > self.max_pending_age_s:
            reasons.append(
                f"inference stuck: a window waits {pending_age:.1f} s "
                f"(limit {self.max_pending_age_s:g} s)"
            )
        return GateVerdict(ping=not reasons, reasons=tuple(reasons))

    def should_ping(
        self,
        now: float,
        last_audio_at: float | None,
        oldest_pending_at: float | None,
        last_device_attempt_at: float | None = None,
    ) -> bool:
        """`verdict(...).ping`: True when ``WATCHDOG=1`` may be sent now."""
        return self.verdict(now, last_audio_at, oldest_pending_at, last_device_attempt_at).ping


def _age(now: float, then: float | None) -> float:
    # A timestamp a hair in the future (read on another thread after `now`) is age 0.
    return math.inf if then is None else max(0.0, now - then)


@dataclass(frozen=True)
class WatchdogProbe:
    """What the daemon knows at one moment, in ``time.monotonic()`` seconds (see the gate)."""

    last_audio_at: float | None
    oldest_pending_at: float | None
    last_device_attempt_at: float | None = None


async def feed_watchdog(
    notifier: Notifier,
    gate: WatchdogGate,
    probe: Callable[[], WatchdogProbe],
    stop: asyncio.Event,
    on_withheld: Callable[[GateVerdict], None] | None = None,
) -> None:
    """Ping every `notifier.watchdog_interval_s()` while `gate` allows it, until `stop`.

    Returns at once when systemd set no watchdog. Each withheld ping calls `on_withheld`
    (a metrics counter) and is logged at most every `WITHHELD_LOG_INTERVAL_S`.
    """
    interval = notifier.watchdog_interval_s()
    if interval is None:
        return
    next_log = -math.inf
    while not stop.is_set():
        p = probe()
        now = time.monotonic()
        verdict = gate.verdict(now, p.last_audio_at, p.oldest_pending_at, p.last_device_attempt_at)
        if verdict.ping:
            notifier.watchdog()
        else:
            if on_withheld is not None:
                on_withheld(verdict)
            if now >= next_log:
                next_log = now + WITHHELD_LOG_INTERVAL_S
                log.error("watchdog_withheld", reasons=list(verdict.reasons))
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            continue
