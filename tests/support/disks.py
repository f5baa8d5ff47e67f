"""Filesystems of a test's own that fail the way disks do in the field (needs root; the
fixtures skip otherwise).

`Ext4Mount`: an ext4 image loop-mounted with ``errors=remount-ro``.

`fail()` writes to the filesystem's ``trigger_fs_error`` (sysfs): ext4 records an error and,
as ``errors=remount-ro`` asks, remounts itself read-only under every open file; SQLite's
writes then fail with "disk I/O error" while an empty transaction still commits. A plain
``mount -o remount,ro`` cannot do this: the kernel refuses it while files are open for
writing. It cannot be made writable again without unmounting.

`FullDisk`: a 1 MiB tmpfs that `fill()` fills to the last byte and `free()` empties again:
SQLite's writes fail with "database or disk is full" in between, and recover after.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

IMAGE_MB = 32  # room for an outbox of a few thousand events
TMPFS_SIZE = "1m"  # an outbox and a few events; filled in a few writes
FILL_CHUNK = 64 * 1024


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


class FullDisk:
    """A small tmpfs mounted at `path` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder
        self.path.mkdir(parents=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )
        self._filler = self.path / "filler"

    def fill(self) -> None:
        """Write until the filesystem has no byte left."""
        with self._filler.open("ab", buffering=0) as fh:  # unbuffered: close flushes nothing
            for size in (FILL_CHUNK, 1):  # chunks, then the last bytes one by one
                try:
                    while True:
                        fh.write(b"\0" * size)
                except OSError:
                    pass

    def free(self) -> None:
        """Give the space back."""
        self._filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        """Unmount (lazily, as `Ext4Mount`)."""
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[FullDisk]:
    """A 1 MiB tmpfs for this test, unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        disk = FullDisk(tmp_path / "tmpfs")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"no tmpfs mount here: {exc}")
    try:
        yield disk
    finally:
        disk.unmount()
