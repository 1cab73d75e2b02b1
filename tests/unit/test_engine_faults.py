"""The engine's faults over an in-memory store (tests/support/fake_store.py): no server
process, the real Downloader, files on tmp_path. Counts requests and bytes, never time."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from syncd.core.manifest import RemoteObject
from syncd.errors import ChecksumMismatchError, ObjectChangedError, RetriesExceededError
from syncd.remote.s3 import S3Location
from syncd.remote.store import OneStore
from syncd.settings import S3Settings
from syncd.transfer.engine import Downloader
from tests.support.daemon import eventually
from tests.support.fake_store import FakeObjectStore

MiB = 1 << 20
SETTINGS = S3Settings(
    part_size=4 * MiB, chunk_size=256 * 1024, max_attempts=3, threaded_reads=False
)


async def no_sleep(_: float) -> None:
    return None


async def fetch(
    store: FakeObjectStore, key: str, dest: Path, settings: S3Settings = SETTINGS
) -> tuple[object, list[int]]:
    (listed,) = [o for o in await store.list_objects(S3Location("b", "run")) if o.path == key]
    downloader = Downloader(settings, OneStore(store), sleep=no_sleep)
    progress: list[int] = []
    try:
        entry = await downloader.download(
            S3Location("b", f"run/{key}"),
            RemoteObject(listed.path, listed.size, listed.etag),
            dest,
            progress.append,
        )
    finally:
        downloader.close()
    return entry, progress


@pytest.fixture
def store() -> FakeObjectStore:
    fake = FakeObjectStore()
    fake.put("b", "run/big.bin", os.urandom(13 * MiB + 7), part_size=5 * MiB)
    fake.put("b", "run/single.bin", os.urandom(9 * MiB + 1))
    fake.put("b", "run/small.json", b'{"a": 1}')
    return fake


@pytest.mark.parametrize("fault", ["503", "429", "short", "long"])
async def test_a_transient_fault_is_retried_and_the_file_is_exact(
    store: FakeObjectStore, tmp_path: Path, fault: str
) -> None:
    store.fail("big.bin", fault)  # type: ignore[arg-type]
    entry, progress = await fetch(store, "big.bin", tmp_path / "big.bin")
    data = store.objects["b/run/big.bin"].data
    assert (tmp_path / "big.bin").read_bytes() == data
    assert entry.verified_by == "md5-multipart"  # type: ignore[attr-defined]
    assert sum(progress) == len(data)  # retried bytes taken back, never counted twice
    assert len(store.gets) == 3 + 1  # three parts, one of them twice


async def test_wrong_bytes_are_caught_by_the_multipart_etag_and_fetched_again(
    store: FakeObjectStore, tmp_path: Path
) -> None:
    store.fail("big.bin", "wrong")
    await fetch(store, "big.bin", tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == store.objects["b/run/big.bin"].data
    assert len(store.gets) == 3 + 3  # the whole file again: nothing of it is trusted


async def test_bytes_wrong_every_time_fail_loudly(store: FakeObjectStore, tmp_path: Path) -> None:
    store.fail("single.bin", *["wrong"] * 10)
    with pytest.raises(ChecksumMismatchError):
        await fetch(store, "single.bin", tmp_path / "single.bin")


async def test_an_object_replaced_mid_download_fails_with_412(
    store: FakeObjectStore, tmp_path: Path
) -> None:
    store.fail("big.bin", "412")
    with pytest.raises(ObjectChangedError):
        await fetch(store, "big.bin", tmp_path / "big.bin")


async def test_a_server_that_stays_down_exhausts_the_attempts(
    store: FakeObjectStore, tmp_path: Path
) -> None:
    store.fail("small.json", *["503"] * 10)
    with pytest.raises(RetriesExceededError, match="failed after 3 attempts"):
        await fetch(store, "small.json", tmp_path / "small.json")
    assert len(store.gets) == 3


async def test_a_whole_object_md5_is_checked(store: FakeObjectStore, tmp_path: Path) -> None:
    entry, _ = await fetch(store, "single.bin", tmp_path / "single.bin")
    data = store.objects["b/run/single.bin"].data
    assert entry.verified_by == "md5"  # type: ignore[attr-defined]
    assert entry.checksum == hashlib.md5(data).hexdigest()  # type: ignore[attr-defined]


@pytest.mark.parametrize("steps", [0, 1, 2, 5, 20, 60])
async def test_cancellation_at_any_await_leaks_no_descriptor(
    store: FakeObjectStore, tmp_path: Path, steps: int
) -> None:
    """Cancelled after `steps` turns of the loop (at the open, mid-ranges, near the end):
    every file descriptor the download opened is closed once its threads are done."""
    task = asyncio.create_task(fetch(store, "big.bin", tmp_path / "big.bin"))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    # The worker threads finish what they had started, then close it: never a leak.
    await eventually(
        lambda: not [path for path in open_files() if path.startswith(str(tmp_path))],
        "every descriptor of the download closed",
    )


def open_files() -> list[str]:
    """What this process's descriptors point at."""
    return [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]
