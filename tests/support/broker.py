"""A real Mosquitto broker per test, and a subscriber that collects what arrives.

The broker listens on a free loopback port (never 1883, where a system broker may run), with
its own config, persistence and log in the test's temporary folder, so a test can stop and
restart it on the same port. TLS (a CA and a server certificate made with the ``openssl``
CLI) and password auth (``mosquitto_passwd``) are opt-in. Locally a missing ``mosquitto``
binary skips the tests that need it; with CI=true it fails them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

LOOPBACK = "127.0.0.1"
RESERVED_PORT = 1883  # a system broker may own it; tests never touch it
START_TIMEOUT_S = 10.0  # mosquitto normally listens within ~50 ms
STOP_TIMEOUT_S = 5.0  # SIGTERM -> persistence saved -> exit
POLL_INTERVAL_S = 0.02
TEST_USERNAME = "weldmon-test"
TEST_PASSWORD = "s3cret-for-tests"  # a throwaway credential for the test broker only
CERT_DAYS = "2"  # certificates outlive any test run, no more


def mosquitto_binary() -> str | None:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin, off some PATHs)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def require_mosquitto() -> str:
    """The mosquitto binary, or skip (fail under CI=true) when it is not installed."""
    binary = mosquitto_binary()
    if binary is not None:
        return binary
    message = "mosquitto binary not found (apt-get install mosquitto mosquitto-clients)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true: broker tests are required")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port free on loopback right now (never 1883)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port != RESERVED_PORT:
            return port


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")


@dataclass(frozen=True)
class TlsFiles:
    """Certificates made for one test broker; clients trust ``ca_file``."""

    ca_file: Path
    server_cert: Path
    server_key: Path


def make_test_certificates(folder: Path, hostname: str = "localhost") -> TlsFiles:
    """A throwaway CA and a server certificate for ``hostname`` and 127.0.0.1 (EC P-256:
    generated in milliseconds, unlike RSA)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    days = ["-days", CERT_DAYS]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE"]
    ca_ext += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    ca_subject = ["-subj", "/CN=weldmon test CA"]
    _run(
        [
            "openssl",
            "req",
            "-x509",
            *ec,
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            *days,
            *ca_subject,
            *ca_ext,
        ],
        folder,
    )
    server_subject = ["-subj", f"/CN={hostname}"]
    _run(
        ["openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr", *server_subject],
        folder,
    )
    (folder / "server.ext").write_text(
        f"subjectAltName=DNS:{hostname},IP:{LOOPBACK}\n"
        "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    )
    signing = ["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-extfile", "server.ext"]
    _run(
        ["openssl", "x509", "-req", "-in", "server.csr", "-out", "server.crt", *days, *signing],
        folder,
    )
    return TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")


class MosquittoBroker:
    """One mosquitto process on loopback, restartable on the same port.

    Args:
        tmp_dir: where config, persistence, log and certificates go.
        port: the port to listen on (default: a free one).
        tls: serve TLS only (clients need ``tls_files.ca_file``).
        password: require ``username`` / ``password``; anonymous clients are refused.
        acl: the text of a Mosquitto ``acl_file`` (needs `password`); each ``user`` it names
            gets an account with the test password.
    """

    def __init__(
        self,
        tmp_dir: Path,
        port: int | None = None,
        tls: bool = False,
        password: bool = False,
        acl: str | None = None,
    ) -> None:
        self.binary = require_mosquitto()
        self.dir = Path(tmp_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self.tls_files = make_test_certificates(self.dir / "certs") if tls else None
        self.username = TEST_USERNAME if password else None
        self.password = TEST_PASSWORD if password else None
        self.log_path = self.dir / "mosquitto.log"
        self.config_path = self.dir / "mosquitto.conf"
        self._process: subprocess.Popen[bytes] | None = None
        if acl is not None and not password:
            raise ValueError("an ACL needs password=True: it grants by username")
        self.acl = acl
        self._write_config(password)

    @property
    def ca_file(self) -> Path | None:
        """The CA that signed the server certificate (TLS brokers only)."""
        return self.tls_files.ca_file if self.tls_files else None

    def _write_config(self, password: bool) -> None:
        lines = [
            f"listener {self.port} {LOOPBACK}",
            "persistence true",  # sessions and retained messages survive restart()
            f"persistence_location {self.dir}/",
            f"log_dest file {self.log_path}",
            "log_type all",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to the 'mosquitto' user, which cannot read
            # pytest's private tmp folder.
            lines.append("user root")
        if password:
            passwd = self.dir / "passwd"
            passwd_bin = shutil.which("mosquitto_passwd") or "mosquitto_passwd"
            _run([passwd_bin, "-b", "-c", str(passwd), TEST_USERNAME, TEST_PASSWORD], self.dir)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
            if self.acl is not None:
                for user in re.findall(r"^user\s+(\S+)", self.acl, flags=re.MULTILINE):
                    _run([passwd_bin, "-b", str(passwd), user, TEST_PASSWORD], self.dir)
                acl_path = self.dir / "acl"
                acl_path.write_text(self.acl)
                lines.append(f"acl_file {acl_path}")
        else:
            lines.append("allow_anonymous true")
        if self.tls_files is not None:
            lines += [
                f"cafile {self.tls_files.ca_file}",
                f"certfile {self.tls_files.server_cert}",
                f"keyfile {self.tls_files.server_key}",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the broker and wait until it accepts TCP connections."""
        if self.running:
            return
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"mosquitto exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(POLL_INTERVAL_S)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port}:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (persistence is saved), SIGKILL if it does not exit in time."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the broker's log, for failure messages."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the subscriber saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float  # time.monotonic() on arrival


class MqttCollector:
    """A paho-mqtt subscriber on its own thread that keeps every message for assertions.

    It (re)subscribes on every connect, so it follows a broker restart. With
    ``clean_session=False`` and a fixed ``client_id`` its QoS 1 subscriptions persist in the
    broker, which queues messages for it while it is reconnecting.
    """

    def __init__(
        self,
        broker: MosquittoBroker,
        topics: list[str],
        *,
        client_id: str = "",
        clean_session: bool = True,
        qos: int = 1,
        username: str | None = None,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.messages: list[ReceivedMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
        )
        self._client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)  # seconds
        if broker.username is not None:
            # another account of the broker's (an ACL's user) shares the test password
            self._client.username_pw_set(username or broker.username, broker.password)
        if broker.ca_file is not None:
            self._client.tls_set(ca_certs=str(broker.ca_file))
        self._qos = qos
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: paho.ReasonCode,
        props: paho.Properties | None,
    ) -> None:
        if not reason.is_failure:
            client.subscribe([(t, self._qos) for t in self.topics])

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reasons: list[paho.ReasonCode],
        props: paho.Properties | None,
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(
                ReceivedMessage(
                    msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), time.monotonic()
                )
            )
            self._cond.notify_all()

    def start(self, timeout: float = 5.0) -> MqttCollector:
        """Connect, subscribe, and return once the broker confirmed the subscription."""
        self._client.connect(self.broker.host, self.broker.port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError(f"no SUBACK for {self.topics} within {timeout} s")
        return self

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, timeout: float = 5.0, retain: bool = False
    ) -> None:
        """Publish from this test client and wait until the broker has it."""
        self._client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(timeout)

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def matching(self, topic_filter: str) -> list[ReceivedMessage]:
        """Messages so far whose topic matches an MQTT filter (``+``/``#`` allowed)."""
        with self._cond:
            return [m for m in self.messages if paho.topic_matches_sub(topic_filter, m.topic)]

    def wait_for(
        self, topic_filter: str, count: int = 1, timeout: float = 10.0
    ) -> list[ReceivedMessage]:
        """Block until ``count`` messages matched ``topic_filter``; return them (all so far).
        Raises TimeoutError naming what did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self.messages if paho.topic_matches_sub(topic_filter, m.topic)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = sorted({m.topic for m in self.messages})
                    raise TimeoutError(
                        f"{len(found)}/{count} messages on {topic_filter!r} after {timeout} s;"
                        f" topics seen: {seen}"
                    )
                self._cond.wait(remaining)

    def wait_until(
        self, predicate: Callable[[list[ReceivedMessage]], bool], timeout: float = 10.0
    ) -> None:
        """Block until ``predicate(messages)`` holds; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self.messages)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met after {timeout} s")
                self._cond.wait(remaining)


def _broker_fixture(tmp_path: Path, **options: bool) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(tmp_path / "mosquitto", **options)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A plain anonymous broker on a free loopback port, stopped after the test."""
    yield from _broker_fixture(tmp_path)


@pytest.fixture
def mosquitto_tls(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A TLS-only broker with a throwaway CA (``.ca_file``) and password auth."""
    yield from _broker_fixture(tmp_path, tls=True, password=True)


@pytest.fixture
def mosquitto_auth(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A plain-TCP broker that requires ``.username`` / ``.password``."""
    yield from _broker_fixture(tmp_path, password=True)


@pytest.fixture
def mqtt_subscriber() -> Iterator[Callable[..., MqttCollector]]:
    """Factory: ``mqtt_subscriber(broker, ["weldmon/#"], **options)`` -> a started
    :class:`MqttCollector`; all are stopped after the test."""
    started: list[MqttCollector] = []

    def make(broker: MosquittoBroker, topics: list[str], **options: object) -> MqttCollector:
        collector = MqttCollector(broker, topics, **options).start()  # type: ignore[arg-type]
        started.append(collector)
        return collector

    yield make
    for collector in started:
        collector.stop()
