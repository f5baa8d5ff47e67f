"""Weld pages' URLs: a weld id comes from the broker and may hold any character, so it is
one percent-encoded path segment in every link (``/`` as ``%2F``, ``?`` as ``%3F``), and it
is read back from the raw, still-encoded path: Starlette routes on the decoded path, where
an encoded ``/`` can no longer be told from a separator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote


def weld_url(weld_id: str, action: str = "", base: str = "/welds/") -> str:
    """``/welds/<id>`` or ``/welds/<id>/<action>``, the id as one encoded segment."""
    url = base + quote(weld_id, safe="")
    return f"{url}/{action}" if action else url


def weld_path(scope: Mapping[str, Any], base: str) -> tuple[str, str] | None:
    """(weld id, action) of a request under ``base`` (``"/welds/"``): the action is ``""``
    for the weld's own page. None if the path is not ``base<id>[/<action>]``."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"], safe="/")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if not path.startswith(base):
        return None
    parts = path[len(base) :].split("/")
    if not parts[0] or len(parts) > 2:
        return None
    return unquote(parts[0]), parts[1] if len(parts) == 2 else ""
