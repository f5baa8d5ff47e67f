"""sha256 of artifact files and the `sha256sum`-compatible file beside each one."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from deploy.errors import ArtifactError

SHA256_PATTERN = r"[0-9a-f]{64}"


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


def check_sha256_pin(pinned: str | None) -> None:
    """Refuse a pin that is no sha256 at all (ArtifactError), so that a typo is named as one
    instead of being reported as a mismatch with the model."""
    if pinned is not None and not re.fullmatch(SHA256_PATTERN, pinned.strip().lower()):
        raise ArtifactError(
            f"the pinned sha256 {pinned!r} is not a sha256 (64 hexadecimal digits, as "
            "sha256sum prints them)"
        )


def sha256_matches(actual: str, pinned: str | None) -> bool:
    """True when nothing is pinned or the pin (any case, surrounding space) equals `actual`."""
    return pinned is None or actual == pinned.strip().lower()
