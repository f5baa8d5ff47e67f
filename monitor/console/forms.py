"""The review form's body, read only once the request may be genuine and never beyond a
bound: a POST is refused on its headers (cross-site, foreign origin, a declared length over
the bound, not a plain form) before a byte of its body is read, and a body that grows past
the bound while it streams (chunked, no length) is refused as soon as it does.

Starlette's ``request.form()`` would read the whole body first and spool a multipart one
to a temporary file, whatever its size; the review form is a handful of short fields, sent
by the browser as ``application/x-www-form-urlencoded``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from deploy.errors import WeldmonError

# The review form is a verdict, a label code, a name (64 chars), a note (500 chars) and a
# config folder (128): under 2 KB even percent-encoded three times over; 64 KiB is generous.
MAX_FORM_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


class FormError(WeldmonError):
    """The form cannot be accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def check_form_headers(headers: dict[str, str], limit: int = MAX_FORM_BYTES) -> None:
    """Refuse, from the headers alone, a body that is not a plain form or declares more than
    ``limit`` bytes. ``headers`` have lower-case keys."""
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != FORM_TYPE:
        raise FormError(f"expected a form ({FORM_TYPE}), got {kind or 'no content type'}", 415)
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise FormError(f"bad Content-Length {declared!r}", 400)
        if int(declared) > limit:
            raise FormError(f"form of {int(declared)} bytes refused (at most {limit})", 413)


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """The form's fields (the first value of each), read up to ``limit`` bytes; FormError
    for a larger body or one that is not UTF-8. Call :func:`check_form_headers` first."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FormError(f"form larger than {limit} bytes refused", 413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormError("the form is not UTF-8", 400) from exc
    fields: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        fields.setdefault(key, value)
    return fields
