"""Safe by default: where the console listens, who may use it, and which POSTs are genuine.

- **Loopback unless told otherwise.** Listening on any other address needs ``--auth-file``
  (HTTP Basic credentials); without it the console refuses to start.
- **Basic auth** for every route but ``/healthz`` when an auth file is given (any address).
  Browsers speak it natively, so no login page or session store is needed; put TLS in front
  (``--tls-cert``/``--tls-key``, or a reverse proxy) on anything but loopback.
- **Cross-site requests.** Browsers send Basic credentials with cross-site form posts too, so
  every POST needs the page's CSRF token and must not come from another site
  (``Sec-Fetch-Site``/``Origin``).
- **DNS rebinding.** On loopback only ``Host: localhost|127.0.0.1|[::1]`` is served
  (Starlette's TrustedHostMiddleware), so a foreign page cannot read the API by pointing its
  own name at 127.0.0.1.
- **Headers**: a Content-Security-Policy that allows only this origin's scripts and media and
  forbids framing (no clickjacking of the review buttons), ``nosniff``, no referrer to
  other sites.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.errors import WeldmonError
from deploy.inputs import MAX_SECRET_BYTES, read_input_text
from monitor.publish.settings import parse_host_port

DEFAULT_PORT = 8080
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
REALM = "weldmon console"
UNPROTECTED_PATHS = ("/healthz",)  # a load balancer's probe; says nothing but "ok"
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
        b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        b"base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" would make Origin "null"
    (b"x-frame-options", b"DENY"),
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConsoleSecurityError(WeldmonError):
    """The console would be exposed without protection, or an auth file is unusable."""


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def parse_listen(text: str) -> ListenAddress:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``HOST`` (port 8080); port 0 picks a free one."""
    host, port = parse_host_port(text, "--listen", DEFAULT_PORT, ConsoleSecurityError, 0)
    return ListenAddress(host, port)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def read_auth_file(path: Path) -> dict[str, str]:
    """``user:password`` lines (``#`` comments); the file must not be readable by others."""
    text = read_input_text(path, MAX_SECRET_BYTES, "--auth-file", ConsoleSecurityError)
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConsoleSecurityError(
            f"--auth-file: {path} is readable by other users (mode {mode & 0o777:o}); chmod 600 it"
        )
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", user) or not password:
            raise ConsoleSecurityError(f"--auth-file: {path}:{number}: expected user:password")
        users[user] = password
    if not users:
        raise ConsoleSecurityError(f"--auth-file: {path} holds no user:password line")
    return users


def check_exposure(listen: ListenAddress, users: dict[str, str] | None) -> None:
    """Refuse a non-loopback listen address without credentials."""
    if users is None and not is_loopback(listen.host):
        raise ConsoleSecurityError(
            f"--listen {listen.url_host}:{listen.port} is not a loopback address: give "
            "--auth-file (user:password lines) so that the console is not open to the network"
        )


def host_header_name(host: str) -> str:
    """``host`` as a Host header names it: an IPv6 literal in brackets (``[::1]``), which is
    how browsers send it and how Starlette's TrustedHostMiddleware compares it."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(listen: ListenAddress, extra: list[str]) -> list[str]:
    """Host headers served: loopback names on loopback (DNS rebinding), else any (auth
    protects it) unless ``--allowed-host`` narrows it."""
    if extra:
        return [host_header_name(h) for h in (*extra, *LOOPBACK_HOSTS)]
    if is_loopback(listen.host):
        return sorted({host_header_name(h) for h in (listen.host, *LOOPBACK_HOSTS)})
    return ["*"]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class BasicAuthMiddleware:
    """Require HTTP Basic credentials from ``users``; puts the user in ``scope["user_name"]``."""

    def __init__(self, app: Asgi, users: dict[str, str] | None) -> None:
        self.app = app
        self.users = users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.users is None or scope["path"] in UNPROTECTED_PATHS:
            await self.app(scope, receive, send)
            return
        user = self._user(_header(scope, b"authorization"))
        if user is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode()),
                        (b"content-type", b"text/plain; charset=utf-8"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"authentication required\n"})
            return
        scope["user_name"] = user
        await self.app(scope, receive, send)

    def _user(self, header: str | None) -> str | None:
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        expected = self.users.get(user) if self.users else None
        # Compare even for unknown users so timing does not tell which names exist.
        ok = hmac.compare_digest(password.encode(), (expected or secrets.token_hex(16)).encode())
        return user if ok and expected is not None else None


class SecurityHeadersMiddleware:
    """Add :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: Asgi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class CsrfGuard:
    """One random token per console process, put in every form; POSTs must return it."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)

    def problem(self, headers: dict[str, str], scheme: str, form_token: str | None) -> str | None:
        """Why a POST is refused (None: it is genuine). ``headers`` are lower-case keys."""
        return self.header_problem(headers, scheme) or self.token_problem(form_token)

    def header_problem(self, headers: dict[str, str], scheme: str) -> str | None:
        """Why a POST is refused from its headers alone: checked before its body is read."""
        site = headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            return f"cross-site request refused (Sec-Fetch-Site: {site})"
        origin = headers.get("origin")
        host = headers.get("host", "")
        if origin is not None and origin != f"{scheme}://{host}":
            return f"cross-origin request refused (Origin: {origin})"
        return None

    def token_problem(self, form_token: str | None) -> str | None:
        """Why a POST is refused for its form's token (None: the page's own token)."""
        if not form_token or not hmac.compare_digest(form_token.encode(), self.token.encode()):
            return "missing or wrong CSRF token (reload the page)"
        return None
