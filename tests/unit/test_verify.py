import base64
import hashlib
import os
import zlib
from pathlib import Path

import pytest
from awscrt import checksums as crt

from syncd.core.checksum import Algorithm, composite_checksum, encode_crc, multipart_etag
from syncd.core.manifest import FileEntry
from syncd.local.lock import RootLock
from syncd.local.verify import RateLimiter, damaged_spans, verify_entry

DATA = os.urandom(3 * 1000 + 17)
PART = 1000


def parts(data: bytes) -> list[bytes]:
    return [data[i : i + PART] for i in range(0, len(data), PART)]


ENTRIES = {
    "crc32": encode_crc(Algorithm.CRC32, zlib.crc32(DATA)),
    "crc64nvme": encode_crc(Algorithm.CRC64NVME, crt.crc64nvme(DATA)),
    "crc32c-composite": composite_checksum(
        Algorithm.CRC32C, [crt.crc32c(p).to_bytes(4, "big") for p in parts(DATA)]
    ),
    "sha256": base64.b64encode(hashlib.sha256(DATA).digest()).decode(),
    "md5": hashlib.md5(DATA).hexdigest(),
    "md5-multipart": multipart_etag([hashlib.md5(p).digest() for p in parts(DATA)]),
    "size": hashlib.md5(DATA).hexdigest(),  # proxied: the MD5 recorded at download
}


@pytest.mark.parametrize("label", sorted(ENTRIES))
def test_every_recorded_check_can_be_redone(tmp_path: Path, label: str) -> None:
    (tmp_path / "f").write_bytes(DATA)
    entry = FileEntry("f", len(DATA), None, label, ENTRIES[label], PART)
    assert verify_entry(tmp_path, entry, RateLimiter(None)) is None
    flipped = bytearray(DATA)
    flipped[2500] ^= 1
    (tmp_path / "f").write_bytes(bytes(flipped))
    problem = verify_entry(tmp_path, entry, RateLimiter(None))
    assert problem is not None
    assert problem.reason == "checksum"


def test_missing_and_resized(tmp_path: Path) -> None:
    entry = FileEntry("f", 10, None, "size", None)
    assert verify_entry(tmp_path, entry, RateLimiter(None)).reason == "missing"  # type: ignore[union-attr]
    (tmp_path / "f").write_bytes(b"123")
    assert verify_entry(tmp_path, entry, RateLimiter(None)).reason == "size"  # type: ignore[union-attr]


def test_size_only_without_a_recorded_value_checks_size(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    assert verify_entry(tmp_path, FileEntry("f", 10, None, "size", None), RateLimiter(None)) is None


def test_rate_limiter_sleeps_to_stay_under_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(100.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        limiter.consume(50)
    assert now[0] == pytest.approx(5.0)  # 500 bytes at 100 B/s
    unlimited = RateLimiter(None, clock=lambda: 0.0, sleep=sleep)
    unlimited.consume(10**9)
    assert len(slept) == 10


def test_lock_excludes_a_second_holder_until_released(tmp_path: Path) -> None:
    first, second = RootLock(tmp_path), RootLock(tmp_path)
    assert first.try_acquire("syncd run")
    assert not second.try_acquire("syncd sync")
    assert "syncd run on" in second.holder()
    assert f"pid {os.getpid()}" in second.holder()
    first.release()
    assert second.try_acquire("syncd sync")
    assert "syncd sync" in first.holder()
    second.release()


def test_watcher_restarts_after_its_thread_fails(tmp_path: Path) -> None:
    import asyncio
    import threading

    from watchdog.utils import BaseThread

    from syncd.local.watch import RootWatcher

    class Exploding(BaseThread):
        def run(self) -> None:
            raise KeyError("inotify bookkeeping")

    async def scenario() -> None:
        seen: list[str] = []
        watcher = RootWatcher(
            [tmp_path], lambda root, run_id: seen.append(run_id), asyncio.get_running_loop()
        )
        watcher.start()
        try:
            assert not watcher.ensure_running()
            broken = Exploding()
            broken.start()
            broken.join()
            assert watcher.ensure_running()  # replaced, and events flow again
            (tmp_path / ("a" * 32)).mkdir()
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.02)
            assert seen
            assert seen[0] == "a" * 32
        finally:
            watcher.stop()
        assert threading.excepthook is not watcher._excepthook

    asyncio.run(scenario())


def ranged_entry(data: bytes, ends: list[int]) -> FileEntry:
    crcs, start = [], 0
    for end in ends:
        crcs.append((end, crt.crc32c(data[start:end])))
        start = end
    return FileEntry("f", len(data), "e", "md5", None, range_crc32c=tuple(crcs))


def test_range_checksums_locate_the_damage(tmp_path: Path) -> None:
    entry = ranged_entry(DATA, [1000, 2000, 3000, len(DATA)])
    damaged = bytearray(DATA)
    damaged[1500] ^= 1
    damaged[3005] ^= 1
    (tmp_path / "f").write_bytes(damaged)
    problem = verify_entry(tmp_path, entry, RateLimiter(None))
    assert problem is not None
    assert problem.reason == "checksum"
    assert [(s.start, s.end) for s in problem.spans] == [(1000, 2000), (3000, len(DATA))]
    assert problem.describe() == "f (checksum: bytes 1000-1999, bytes 3000-3016)"
    assert damaged_spans(tmp_path / "f", entry, RateLimiter(None)) == problem.spans
    (tmp_path / "f").write_bytes(DATA)
    assert verify_entry(tmp_path, entry, RateLimiter(None)) is None


def test_a_symlink_in_place_of_a_file_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_bytes(DATA)
    (tmp_path / "f").symlink_to(tmp_path / "elsewhere")
    entry = ranged_entry(DATA, [len(DATA)])
    assert verify_entry(tmp_path, entry, RateLimiter(None)).reason == "missing"  # type: ignore[union-attr]
