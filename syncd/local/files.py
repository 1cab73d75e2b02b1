"""Opening, writing and re-reading the files a download makes (blocking; worker threads)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from syncd.core.checksum import Hasher
from syncd.errors import LocalStoreError, LocalWriteError
from syncd.local.spans import hash_span

__all__ = ["hash_exactly", "locally", "open_existing", "open_preallocated", "write_at"]

T = TypeVar("T")

Buffer = bytes | bytearray | memoryview


def open_preallocated(path: Path, size: int, keep: bool = False) -> int:
    """A file of `size` bytes reserved on disk; a full disk fails here, before any GET.

    `keep` opens what a killed attempt left (resume) instead of starting empty.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW: a symlink planted in staging must never be written through.
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | (0 if keep else os.O_TRUNC)
    try:
        if os.lstat(path).st_nlink > 1:
            # A hard link (a kept file an interrupted build linked from the published folder):
            # opening it to write, O_TRUNC first of all, would change the published file in
            # place. A file of its own instead. (The simulation found a failed sync that had
            # changed the published folder so.)
            path.unlink()
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        path.unlink()  # the link itself; then a real file in its place
        fd = os.open(path, flags, 0o644)
    try:
        if size > 0:
            _reserve(fd, path, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _reserve(fd: int, path: Path, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise LocalStoreError(
                f"no space left for {path.name} ({size} bytes) under {path.parent}"
            ) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)  # NFS without fallocate: sparse is the best on offer


def open_existing(path: Path) -> int:
    """An existing regular file opened for writing in place, never through a symlink."""
    return os.open(path, os.O_RDWR | os.O_NOFOLLOW)


# pwritev takes at most IOV_MAX (1024 on Linux) buffers.
_MAX_PIECES = 1024


def write_at(fd: int, pieces: Sequence[Buffer], offset: int) -> None:
    """All of `pieces`, in order, at `offset`: one pwritev where the kernel takes them all
    (joining them first would copy every byte once more), looping over short writes."""
    views = [memoryview(piece) for piece in pieces]
    while views:
        written = os.pwritev(fd, views[:_MAX_PIECES], offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def hash_exactly(fd: int, hasher: Hasher, start: int, end: int, block: int) -> None:
    """Feed bytes [start, end) of `fd` to `hasher`; a file that ends sooner is an EIO."""
    reached = hash_span(fd, hasher, start, end, block)
    if reached < end:
        raise OSError(errno.EIO, f"short read at {reached} while hashing")


def locally(call: Callable[..., T], *args: object) -> T:
    """A local file operation inside a reader: its failure is the disk's, never retried."""
    try:
        return call(*args)
    except OSError as exc:
        raise LocalWriteError(exc) from exc
