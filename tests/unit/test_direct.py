"""RangeWriter: aligned stretches past the page cache, everything else through it, and the
file's bytes right either way (on the test machine's own filesystem, and on tmpfs)."""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from syncd.local.direct import ALIGNMENT, RangeWriter, filesystem_type
from syncd.local.files import open_preallocated

SIZE = 64 * ALIGNMENT + 100


@pytest.fixture
def direct_dir(tmp_path: Path) -> Path:
    if filesystem_type(os.stat(tmp_path).st_dev) not in ("ext4", "xfs"):
        pytest.skip("direct writes are taken on ext4 and xfs only")
    return tmp_path


@pytest.fixture
def data() -> bytes:
    return os.urandom(SIZE)


@contextmanager
def aligned(data: bytes) -> Iterator[memoryview]:
    """`data` in page-aligned memory, as the pump threads' buffers are."""
    buffer = mmap.mmap(-1, len(data))
    buffer[:] = data
    view = memoryview(buffer)
    try:
        yield view
    finally:
        view.release()
        buffer.close()


def writer_for(path: Path, direct: bool = True) -> RangeWriter:
    return RangeWriter.open(direct, open_preallocated, path, SIZE)


def test_aligned_pieces_skip_the_page_cache_and_a_tail_does_not(
    direct_dir: Path, data: bytes
) -> None:
    path = direct_dir / "file.bin"
    writer = writer_for(path)
    assert writer.direct
    with aligned(data) as view:
        writer.write([view[: 32 * ALIGNMENT]], 0)
        writer.write([view[32 * ALIGNMENT :]], 32 * ALIGNMENT)  # ends in a partial block
        writer.close()
    assert writer.direct_bytes == 64 * ALIGNMENT  # all but the 100-byte tail
    assert path.read_bytes() == data


def test_unaligned_offsets_memory_and_several_pieces_go_through_the_page_cache(
    direct_dir: Path, data: bytes
) -> None:
    path = direct_dir / "file.bin"
    writer = writer_for(path)
    writer.write([data[:100]], 0)  # not a whole block
    writer.write([data[100 : 8 * ALIGNMENT]], 100)  # an offset inside a block
    writer.write(
        [data[8 * ALIGNMENT : 9 * ALIGNMENT], data[9 * ALIGNMENT : 10 * ALIGNMENT]], 8 * ALIGNMENT
    )
    assert writer.direct_bytes == 0
    assert writer.direct
    # bytes a streaming reader made: aligned offset and length, memory that is not; refused
    # with EINVAL, written through the page cache, and direct writes given up for the file
    unaligned = memoryview(b"x" + data)[1 + 10 * ALIGNMENT : 1 + 12 * ALIGNMENT]
    writer.write([unaligned], 10 * ALIGNMENT)
    assert not writer.direct
    with aligned(data) as view:
        writer.write([view[12 * ALIGNMENT :]], 12 * ALIGNMENT)
    writer.close()
    assert path.read_bytes() == data
    assert writer.direct_bytes == 0
    assert writer.fd == -1


def test_turned_off_or_on_tmpfs_nothing_is_direct(tmp_path: Path, data: bytes) -> None:
    places = [(tmp_path / "off.bin", False)]
    if os.path.isdir("/dev/shm") and filesystem_type(os.stat("/dev/shm").st_dev) == "tmpfs":
        places.append((Path("/dev/shm") / f"syncd-test-{os.getpid()}.bin", True))
    for path, direct in places:
        writer = writer_for(path, direct)
        try:
            assert not writer.direct
            with aligned(data) as view:
                writer.write([view], 0)
            assert writer.direct_bytes == 0
        finally:
            writer.close()
        assert path.read_bytes() == data
        path.unlink()


def test_a_device_not_mounted_has_no_type() -> None:
    assert filesystem_type(os.makedev(4095, 4095)) is None


def test_a_direct_file_is_read_back_direct_and_hashes_right(direct_dir: Path, data: bytes) -> None:
    path = direct_dir / "file.bin"
    writer = writer_for(path)
    with aligned(data) as view:
        writer.write([view], 0)
    try:
        for start, end in ((0, SIZE), (8 * ALIGNMENT, 9 * ALIGNMENT + 7), (ALIGNMENT + 1, SIZE)):
            hasher = hashlib.md5(usedforsecurity=False)
            writer.hash_back(hasher, start, end)
            assert hasher.digest() == hashlib.md5(data[start:end]).digest()
    finally:
        writer.close()


def test_a_file_written_through_the_page_cache_is_read_back_through_it(
    tmp_path: Path, data: bytes
) -> None:
    writer = writer_for(tmp_path / "file.bin", direct=False)
    try:
        writer.write([data], 0)
        hasher = hashlib.md5(usedforsecurity=False)
        writer.hash_back(hasher, 0, SIZE)
        assert hasher.digest() == hashlib.md5(data).digest()
    finally:
        writer.close()
