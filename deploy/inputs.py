"""Input files read whole (configs, password files, artifacts): checked before they are read
and never read past a bound, so a wrong or huge file costs a message, not gigabytes of
memory. Every refusal names the file and the reason in the words the system gives
("Permission denied", "Is a directory"), raised as the caller's own error type.

Text files (configs, credentials, auth files) are also checked byte by byte: one saved in
another encoding (a Latin-1 comment such as ``# für Halle``) or one that is not text at all
(NUL bytes) is a bad input, not a crash, named with the line, column and byte that is wrong,
so every command exits 2 with the same clear message.

The bounds are generous on purpose: they stop a wrong file (a recording, a disk image, a
log) given where a small one belongs, never a real one.
"""

from __future__ import annotations

import stat
from pathlib import Path

from deploy.errors import WeldmonError

KIB = 1024
MIB = 1024 * KIB
# A monitor config is a few KB; the largest plausible one (dozens of stations, comments) is
# far under 1 MB.
MAX_CONFIG_BYTES = 4 * MIB
# A password or auth file is a line per user.
MAX_SECRET_BYTES = 64 * KIB
# Deploy artifacts are ~1 MB today (the CNN); a backbone 100x larger is still far under this.
MAX_ARTIFACT_BYTES = 512 * MIB


def _size_text(n: int) -> str:
    if n >= MIB:
        return f"{n / MIB:.1f} MB"
    return f"{n // KIB} KB" if n >= KIB else f"{n} bytes"


def check_input_file(path: Path, limit: int, what: str, error: type[WeldmonError]) -> int:
    """The size of ``path``, a readable regular file of at most ``limit`` bytes; raises
    ``error`` (message ``"{what}: {path}: reason"``; ``what`` may be "") otherwise."""
    lead = f"{what}: {path}" if what else str(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise error(f"{lead}: cannot read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{lead}: a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{lead}: not a regular file (a socket, pipe or device)")
    if info.st_size > limit:
        raise error(
            f"{lead}: {_size_text(info.st_size)}, more than the {_size_text(limit)} such a "
            "file may have: is it the right file?"
        )
    return info.st_size


def read_input_bytes(path: Path, limit: int, what: str, error: type[WeldmonError]) -> bytes:
    """``path``'s bytes (see :func:`check_input_file`); never reads more than ``limit``
    bytes, even from a file that grows or reports no size (``/proc``)."""
    check_input_file(path, limit, what, error)
    lead = f"{what}: {path}" if what else str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise error(f"{lead}: cannot read ({exc.strerror or exc})") from exc
    if len(data) > limit:
        raise error(f"{lead}: more than the {_size_text(limit)} such a file may have")
    return data


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


def read_input_text(path: Path, limit: int, what: str, error: type[WeldmonError]) -> str:
    """``path`` as UTF-8 text (see :func:`read_input_bytes` and :func:`decode_text`)."""
    data = read_input_bytes(path, limit, what, error)
    return decode_text(data, f"{what}: {path}" if what else str(path), error)
