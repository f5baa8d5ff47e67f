"""Input files read whole (configs, password files, artifacts): checked before they are read
and never read past a bound, so a wrong or huge file costs a message, not gigabytes of
memory. Every refusal names the file and the reason in the words the system gives
("Permission denied", "Is a directory"), raised as the caller's own error type.

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


def read_input_text(path: Path, limit: int, what: str, error: type[WeldmonError]) -> str:
    """``path`` as UTF-8 text (see :func:`read_input_bytes`)."""
    data = read_input_bytes(path, limit, what, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lead = f"{what}: {path}" if what else str(path)
        raise error(f"{lead}: not UTF-8 text (byte {exc.start}): is it the right file?") from exc
