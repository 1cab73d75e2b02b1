"""A small volume that can be filled, for the full-disk tests (a tmpfs; root only)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

DISK_MIB = 48


def mounted_small_disk(tmp_path: Path, *, read_only: bool = False) -> Iterator[Path]:
    """A 48 MiB tmpfs under `tmp_path` (mounted read-only if asked), unmounted after; skips
    where mounting is refused."""
    disk = tmp_path / ("read-only-disk" if read_only else "disk")
    disk.mkdir()
    options = f"size={DISK_MIB}m" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the volume, as another writer would."""
    filler = disk / "someone-elses-file"
    # Unbuffered: a buffered file keeps what a write could not place and fails again on close.
    with filler.open("wb", buffering=0) as handle:
        block = b"\0" * (1 << 20)
        try:
            while True:
                handle.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def fill_leaving(disk: Path, free: int) -> Path:
    """Take all but `free` bytes of the volume's free space (rounded to its blocks)."""
    filler = disk / "someone-elses-file"
    stats = os.statvfs(disk)
    available = stats.f_bavail * stats.f_frsize
    with filler.open("wb") as handle:
        if available > free:
            os.posix_fallocate(handle.fileno(), 0, available - free)
    return filler
