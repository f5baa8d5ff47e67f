"""A real ext4 filesystem of its own for a test: an image file, loop-mounted with
``errors=remount-ro``, that the test can make fail the way a disk does in the field.

`fail()` writes to the filesystem's ``trigger_fs_error`` (sysfs): ext4 records an error and,
as ``errors=remount-ro`` asks, remounts itself read-only under every open file; SQLite's
writes then fail with "disk I/O error" while an empty transaction still commits. A plain
``mount -o remount,ro`` cannot do this: the kernel refuses it while files are open for
writing. Needs root and a loop device: the fixture skips otherwise.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

IMAGE_MB = 32  # room for an outbox of a few thousand events


class Ext4Mount:
    """An ext4 image mounted at `path` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.image = folder / "ext4.img"
        self.path = folder / "mnt"
        self.path.mkdir(parents=True)
        with self.image.open("wb") as fh:
            fh.truncate(IMAGE_MB * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        subprocess.run(
            ["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.path)],
            check=True,
            capture_output=True,
        )
        source = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(self.path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.device = Path(os.path.realpath(source)).name  # loopN

    def fail(self) -> None:
        """An ext4 error: the filesystem goes read-only under its open files."""
        Path(f"/sys/fs/ext4/{self.device}/trigger_fs_error").write_text("weldmon test\n")

    def unmount(self) -> None:
        """Unmount (lazily: a test's leftover handles must not keep the loop device)."""
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


@pytest.fixture
def ext4_mount(tmp_path: Path) -> Iterator[Ext4Mount]:
    """A fresh ext4 filesystem mounted for this test, unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root")
    try:
        mount = Ext4Mount(tmp_path / "ext4")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"no loop-mounted ext4 here: {exc}")
    try:
        yield mount
    finally:
        mount.unmount()
