"""sha256 of artifact files and the `sha256sum`-compatible file beside each one."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """sha256 of bytes already read (the loader hashes exactly what it loads)."""
    return hashlib.sha256(data).hexdigest()


def write_sha256_file(path: Path, sha256: str) -> Path:
    """`sha256sum`-compatible `<path>.sha256`, so `sha256sum -c` verifies a delivered artifact."""
    out = path.with_name(path.name + ".sha256")
    out.write_text(f"{sha256}  {path.name}\n")
    return out


def sha256_matches(actual: str, pinned: str | None) -> bool:
    """True when nothing is pinned or the pin (any case, surrounding space) equals `actual`."""
    return pinned is None or actual == pinned.strip().lower()
