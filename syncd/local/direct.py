"""Writes that skip the page cache (O_DIRECT) where the filesystem takes them well.

A model's bytes are written once and not read back by this machine (the endpoint reads them
elsewhere), yet a buffered write copies every byte into a fresh page-cache page first: on the
2-core benchmark rig that copy (`copy_folio_from_iter_atomic`) was 66% of a size-only
download's CPU samples (`perf record -g`, 3 x 1 GiB on `rclone serve s3`), and writeback then
walks the same pages again. An O_DIRECT write hands the pump's buffer to the device instead,
which took the same download from 6.5 to 2.9 CPU seconds. A whole-object MD5, which must
read the file back in byte order while ranges land out of order, reads it direct as well
(`hash_back`): the device fills an aligned buffer, with no page-cache page made on the way in
or out (3 x 1 GiB verified so: 9.57 s and 4.32 CPU s/GiB before, 6.49 s and 2.41 after,
`python -m tests.bench.engine_ab`).

Direct I/O wants the buffer's address, the file offset and the length aligned to the
device's block; the pump threads' buffers are page-aligned (anonymous mmap), ranges start on
upload-part boundaries, and a piece that is not aligned (a file's tail, a reader's own bytes,
an odd part size) goes through the ordinary descriptor. Only ext4 and xfs are trusted with it:
on NFS (an EFS dataset) every direct write is a synchronous round trip, and tmpfs or overlay
either refuse it or gain nothing.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import threading
from collections.abc import Callable, Sequence

from syncd.core.checksum import Hasher
from syncd.local.files import Buffer, hash_exactly, write_at

__all__ = ["ALIGNMENT", "RangeWriter", "filesystem_type"]

# The largest logical block size in common use (4Kn disks); 512-byte devices accept it too.
ALIGNMENT = 4096
_DIRECT_FILESYSTEMS = frozenset({"ext4", "xfs"})
_READ_BLOCK = 1 << 20  # a read-back's unit: ~1,000 reads per GiB, 1 MiB of memory per file


@functools.lru_cache(maxsize=64)
def filesystem_type(device: int) -> str | None:
    """The filesystem type of the mount whose device is `device` (an `st_dev`), from
    /proc/self/mountinfo; None where it cannot be told (not Linux, an anonymous device)."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                # ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE ...
                if len(fields) > 7 and fields[2] == wanted and "-" in fields[6:]:
                    return fields[fields.index("-", 6) + 1]
    except OSError:
        return None
    return None


def _reopen_direct(fd: int) -> int | None:
    """A second, O_DIRECT descriptor on the file `fd` has open, or None where none is had."""
    if not hasattr(os, "O_DIRECT"):
        return None
    if filesystem_type(os.fstat(fd).st_dev) not in _DIRECT_FILESYSTEMS:
        return None
    try:
        # /proc/self/fd/N names the open file itself, whatever its path has become since.
        return os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return None


class RangeWriter:
    """Writes the ranges of one open file from many threads: each aligned stretch of a piece
    through an O_DIRECT descriptor of the same file, the rest through `fd` (the page cache).
    It owns both descriptors."""

    @classmethod
    def open(cls, direct: bool, opener: Callable[..., int], *args: object) -> RangeWriter:
        """The file `opener(*args)` opens, in a writer (blocking)."""
        fd = opener(*args)
        try:
            return cls(fd, direct)
        except BaseException:
            os.close(fd)
            raise

    def __init__(self, fd: int, direct: bool) -> None:
        self.fd = fd
        self._direct = _reopen_direct(fd) if direct else None
        self._refused = False  # the direct descriptor stays open until close: never reused
        # One buffered writer at a time: pwrites from many pump threads into one file contend
        # for its inode lock, and the kernel spins on it (rwsem_spin_on_owner was 18% of a
        # size-only `perf record -g` of `python -m tests.bench.fetch`); waiting here sleeps.
        # Aligned direct writes into the preallocated file share the inode lock and go side
        # by side: the device's queue deepens with the pumps instead of one write at a time
        # per file.
        self._buffered = threading.Lock()
        self._counting = threading.Lock()
        self.direct_bytes = 0  # what skipped the page cache (tests count it)
        self._read_buffer: mmap.mmap | None = None

    @property
    def direct(self) -> bool:
        return self._direct is not None and not self._refused

    def write(self, pieces: Sequence[Buffer], offset: int) -> None:
        if self.direct and len(pieces) == 1 and offset % ALIGNMENT == 0:
            view = memoryview(pieces[0]).cast("B")
            written = self._write_direct(view[: len(view) - len(view) % ALIGNMENT], offset)
            if written == len(view):
                return
            pieces, offset = [view[written:]], offset + written
        with self._buffered:
            write_at(self.fd, pieces, offset)

    def _write_direct(self, view: memoryview, offset: int) -> int:
        if not view or self._direct is None:
            return 0
        try:
            written = os.pwrite(self._direct, view, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # Memory not aligned (bytes a streaming reader made) or a device with larger
            # blocks: the page cache from here on, for this file.
            self._refused = True
            return 0
        with self._counting:
            self.direct_bytes += written
        return written

    def hash_back(self, hasher: Hasher, start: int, end: int) -> None:
        """Feed bytes [start, end) of the file to `hasher` (blocking; one caller at a time).

        Bytes written direct are not in the page cache, so they are read direct too: the
        device fills an aligned buffer, where a buffered read would first fill fresh
        page-cache pages (the cost direct writes avoid). Kernels keep the two coherent: a
        direct read writes out any page-cache bytes of its span first. Without a direct
        descriptor, or from an offset inside a block, through the page cache.
        """
        if self._direct is None or start % ALIGNMENT:
            hash_exactly(self.fd, hasher, start, end, _READ_BLOCK)
            return
        if self._read_buffer is None:
            self._read_buffer = mmap.mmap(-1, _READ_BLOCK)
        with memoryview(self._read_buffer) as view:
            position = start
            while position < end:
                # A whole block, even past `end`: the bytes beyond it are not hashed.
                try:
                    count = os.preadv(self._direct, [view], position)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    hash_exactly(self.fd, hasher, position, end, _READ_BLOCK)
                    return
                take = min(count, end - position)
                if take <= 0:
                    raise OSError(errno.EIO, f"short read at {position} while hashing")
                hasher.update(view[:take])
                position += take

    def close(self) -> None:
        """Once every write has returned (the engine closes a file after its ranges)."""
        with self._buffered:
            if self._direct is not None:
                os.close(self._direct)
                self._direct = None
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            if self._read_buffer is not None:
                self._read_buffer.close()
                self._read_buffer = None
