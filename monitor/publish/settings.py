"""The ``mqtt:`` section of the daemon's YAML config: broker, credentials, TLS, topics, timing.

Validated before anything connects; every error names its key. The daemon's config module
composes this model; ``enabled: false`` runs replay (or a bench) without any broker.
"""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from deploy.errors import WeldmonError
from deploy.inputs import MAX_SECRET_BYTES, read_input_text
from deploy.strict_model import StrictModel
from monitor.events import DEFAULT_TOPIC_PREFIX

DEFAULT_PORT = 1883  # IANA MQTT over TCP
DEFAULT_KEEPALIVE_S = 30  # broker declares us dead (and sends the will) after 1.5x this
DEFAULT_RECONNECT_MIN_S = 1.0  # first back-off ceiling after a lost connection
DEFAULT_RECONNECT_MAX_S = 60.0  # back-off cap: a broker back after an outage is found within 1 min
DEFAULT_CONNECT_TIMEOUT_S = 10.0  # CONNACK / SUBACK / PUBACK wait before the link is deemed dead
MIN_KEEPALIVE_S = 5  # below this, a busy loop or a GC pause gets us disconnected
# MQTT 3.1.1 only guarantees 23-byte client ids; Mosquitto accepts longer, so we allow some room.
MAX_CLIENT_ID_CHARS = 64
_TOPIC_FORBIDDEN = ("+", "#", "\x00")


class MqttConfigError(WeldmonError):
    """The ``mqtt:`` section names files that cannot be used (TLS certificates)."""


def parse_host_port(
    text: str,
    option: str,
    default_port: int,
    error: type[WeldmonError] = MqttConfigError,
    min_port: int = 1,
) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` given to `option` -> (host, port); a bad
    one raises `error` (each command line tool passes its own)."""
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not host:
        raise error(f"{option}: no host in {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not min_port <= int(port_text) <= 65535:
        raise error(f"{option}: port must be {min_port}..65535, got {port_text!r}")
    return host, int(port_text)


def parse_broker(text: str, error: type[WeldmonError] = MqttConfigError) -> tuple[str, int]:
    """A ``--broker`` value -> (host, port), the MQTT port when none is given."""
    return parse_host_port(text, "--broker", DEFAULT_PORT, error)


def read_secret(path: str, what: str, error: type[WeldmonError] = MqttConfigError) -> str:
    """A password file's first line without its line end; unreadable (or far larger than a
    password file: a wrong file) raises `error`."""
    return read_input_text(Path(path), MAX_SECRET_BYTES, what, error).rstrip("\r\n")


def default_client_id() -> str:
    """``weldmon-{hostname}``, restricted to characters every broker accepts."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"
    return f"weldmon-{host}"[:MAX_CLIENT_ID_CHARS]


class TlsConfig(StrictModel):
    """TLS to the broker. ``ca_file`` unset means the system trust store; ``insecure`` only
    skips the hostname check (the chain is still verified against the CA)."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None  # client certificate (mutual TLS), with key_file
    key_file: Path | None = None
    insecure: bool = False

    def ssl_context(self) -> ssl.SSLContext:
        """The client context for these files; MqttConfigError names what cannot be loaded."""
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
            if self.cert_file is not None and self.key_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError) as exc:
            raise MqttConfigError(f"mqtt.tls: cannot load certificates: {exc}") from exc
        # paho semantics of "insecure": skip the hostname check, still verify the chain.
        context.check_hostname = not self.insecure
        return context

    @model_validator(mode="after")
    def _files_usable(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        if self.enabled:
            for name in ("ca_file", "cert_file", "key_file"):
                path = getattr(self, name)
                if path is not None and not path.is_file():
                    raise ValueError(f"{name}: no such file {path}")
        return self


class MqttConfig(StrictModel):
    """Connection to one MQTT broker."""

    enabled: bool = True  # false: publish nothing (replay, benches); events still go to stdout
    host: str = Field("localhost", min_length=1)
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig = TlsConfig()
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    client_id: str = Field(
        default_factory=default_client_id, min_length=1, max_length=MAX_CLIENT_ID_CHARS
    )
    keepalive_s: int = Field(DEFAULT_KEEPALIVE_S, ge=MIN_KEEPALIVE_S, le=65535)
    reconnect_min_s: float = Field(DEFAULT_RECONNECT_MIN_S, gt=0.0)
    reconnect_max_s: float = Field(DEFAULT_RECONNECT_MAX_S, gt=0.0)
    connect_timeout_s: float = Field(DEFAULT_CONNECT_TIMEOUT_S, gt=0.0)

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix_is_plain(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        if any(c in value for c in _TOPIC_FORBIDDEN):
            raise ValueError("must not contain MQTT wildcards (+, #) or NUL")
        if value.startswith("/") or value.endswith("/"):
            raise ValueError("must not start or end with '/'")
        if "//" in value:
            raise ValueError("must not contain an empty topic level ('//')")
        if value.startswith("$"):
            raise ValueError("must not start with '$' (reserved for broker topics)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) is below reconnect_min_s "
                f"({self.reconnect_min_s})"
            )
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        return self
