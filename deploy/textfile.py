"""Reading a config, credentials or auth file as text: the one place that checks its bytes.

A file saved in another encoding (a Latin-1 comment such as ``# für Halle``) or one that is
not text at all (NUL bytes) is a bad input, not a crash: the caller's error type is raised
with the line, column and byte that is wrong, so every command exits 2 with the same clear
message. An unreadable file raises OSError as before: each caller words that itself.
"""

from __future__ import annotations

from pathlib import Path

from deploy.errors import WeldmonError

UTF8_BOM = b"\xef\xbb\xbf"  # editors on Windows write it; harmless, so skipped


def _where(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def decode_text(data: bytes, name: str, error: type[WeldmonError]) -> str:
    """`data` as UTF-8 text (a leading BOM dropped); raises `error` naming `name` and where
    the first NUL byte or invalid UTF-8 sequence is."""
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    nul = data.find(b"\0")
    if nul >= 0:
        raise error(f"{name}: not a text file: NUL byte at {_where(data, nul)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.end]
        raise error(
            f"{name}: not UTF-8 at {_where(data, exc.start)} (byte {bad.hex(' ', 1)}); "
            "save the file as UTF-8"
        ) from None


def read_text_file(path: str | Path, error: type[WeldmonError], option: str = "") -> str:
    """The file at `path` as UTF-8 text; raises `error` for NUL bytes or invalid UTF-8
    (`decode_text`; the message begins with `option`, e.g. ``--auth-file``, when given) and
    OSError when it cannot be read."""
    name = f"{option} {path}" if option else str(path)
    return decode_text(Path(path).read_bytes(), name, error)
