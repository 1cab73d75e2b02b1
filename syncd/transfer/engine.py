"""The transfer engine: parallel ranged GETs into preallocated files, verified as they stream."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from syncd.core.checksum import (
    Algorithm,
    CrcHasher,
    Hasher,
    checksums_match,
    combine_crcs,
    composite_checksum,
    encode_crc,
    multipart_etag,
    new_hasher,
)
from syncd.core.manifest import FileEntry, RemoteObject, Span
from syncd.core.plan import CheckPlan, ObjectFacts, Range, choose_check, plan_ranges
from syncd.errors import (
    ChecksumMismatchError,
    LocalStoreError,
    ObjectChangedError,
    RetryableError,
    SourceError,
    primary_error,
)
from syncd.local.spans import hash_span
from syncd.local.writeback import Writeback
from syncd.remote.mlflow_proxy import MlflowArtifactProxy
from syncd.remote.retry import RetryPolicy
from syncd.remote.s3 import S3Location, S3ObjectStore, facts_from_http_headers
from syncd.settings import S3Settings
from syncd.transfer.blocking_get import Abort, BlockingRangeReader, LocalWriteError, Write
from syncd.transfer.resume import PartMap, ResumeState

__all__ = ["Downloader", "NullObserver", "TransferObserver"]

T = TypeVar("T")
log = logging.getLogger(__name__)
Progress = Callable[[int], None]

_READ_TIMEOUT = 60.0  # seconds without a byte before a request is given up (and retried)
_URL_RENEW_AFTER = 900.0  # presigned URLs live an hour; renew after a quarter of it


class TransferObserver(Protocol):
    """What the engine reports while it works (metrics implement it)."""

    def bytes_downloaded(self, count: int) -> None: ...

    def request_retried(self, reason: str) -> None: ...

    def checksum_failed(self, path: str) -> None: ...

    def in_flight(self, delta: int) -> None: ...


class NullObserver:
    """An observer that records nothing."""

    def bytes_downloaded(self, count: int) -> None:
        pass

    def request_retried(self, reason: str) -> None:
        pass

    def checksum_failed(self, path: str) -> None:
        pass

    def in_flight(self, delta: int) -> None:
        pass


# pwritev takes at most IOV_MAX (1024 on Linux) buffers; a block is written before it has more.
_MAX_PIECES = 512


def _write_and_hash(fd: int, pieces: list[bytes], offset: int, hasher: Hasher | None) -> None:
    # Runs in a worker thread: pwritev and the hashers release the GIL, so the event loop keeps
    # streaming while another core hashes. The pieces are the response's chunks as received:
    # one pwritev takes them all, where joining them first would copy every byte once more
    # on the (CPU-bound) event loop.
    views = [memoryview(piece) for piece in pieces]
    while views:
        written = os.pwritev(fd, views, offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
    if hasher is not None:
        for piece in pieces:
            hasher.update(piece)


def _hash_span(fd: int, hasher: Hasher, start: int, end: int, block: int) -> None:
    reached = hash_span(fd, hasher, start, end, block)
    if reached < end:
        raise OSError(errno.EIO, f"short read at {reached} while hashing")


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
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class _RangeGet:
    """One ranged GET of an object pinned to its ETag, and the file its bytes go into."""

    store: S3ObjectStore
    location: S3Location
    byte_range: Range
    etag: str
    fd: int
    # One writer at a time per file (shared by its ranges): pwrites from many pump threads
    # into one file contend for its inode lock, and the kernel spins on it
    # (rwsem_spin_on_owner was 18% of the size-only profile); waiting here sleeps instead.
    writing: threading.Lock


@dataclass
class _Whole:
    """A whole-object GET's facts, the check they call for, what its bytes fed, and the file
    they made (fstat before close: a stat on the event loop would wait on the disk)."""

    facts: ObjectFacts
    check: CheckPlan
    hashers: RangeHashers
    written: os.stat_result | None = None


def _locally(call: Callable[..., T], *args: Any) -> T:
    """A local file operation inside a pump thread: its failure is the disk's, never retried."""
    try:
        return call(*args)
    except OSError as exc:
        raise LocalWriteError(exc) from exc


def _writer(
    fd: int, hasher: Hasher | None, counted: Progress, writing: threading.Lock | None = None
) -> Write:
    """Where a pump thread's buffers go: `pwrite` at their offset, the hashers, the count.
    pwrite and the hashers release the GIL; `writing` serialises the pwrites into one file."""
    lock = writing or threading.Lock()

    def write(data: memoryview, offset: int) -> None:
        done = 0
        with lock:
            while done < len(data):
                done += _locally(os.pwrite, fd, data[done:], offset + done)
        if hasher is not None:
            hasher.update(data)
        counted(len(data))

    return write


class _Tally:
    """Progress passed on, and taken back in one call when an attempt fails: its retry
    fetches those bytes again, and the bar must not count them twice."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._reported = 0

    def __call__(self, count: int) -> None:
        self._reported += count
        self._progress(count)

    def take_back(self) -> None:
        self._progress(-self._reported)
        self._reported = 0


async def _thread_done(future: asyncio.Future[T]) -> T:
    """Await a worker thread's result; when cancelled, still wait for the thread, then raise."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        raise


async def _opened(opener: Callable[..., int], *args: Any) -> int:
    """A file opened (and preallocated) in a worker thread. Cancelled meanwhile, it waits for
    the thread (which cannot be stopped) and closes what it opened: never a leaked descriptor,
    never a file still being made after the download gave up."""
    future = asyncio.ensure_future(asyncio.to_thread(opener, *args))
    try:
        return await _thread_done(future)
    except asyncio.CancelledError:
        if not future.cancelled() and future.exception() is None:
            os.close(future.result())
        raise


def open_existing(path: Path) -> int:
    """An existing regular file opened for writing in place, never through a symlink."""
    return os.open(path, os.O_RDWR | os.O_NOFOLLOW)


class RangeHashers:
    """What one range's bytes feed: the check's own hasher, if it hashes per range, and the
    CRC32C the manifest keeps so that a later repair finds and re-fetches only this range."""

    def __init__(self, check: Hasher | None) -> None:
        self.check = check
        self.crc32c = CrcHasher(Algorithm.CRC32C)

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        if self.check is not None:
            self.check.update(data)
        self.crc32c.update(data)  # 13-16 GB/s (awscrt): free next to the network

    def digest(self) -> bytes:
        return self.crc32c.digest()


class OrderedHasher:
    """Feeds a whole-object hash in byte order while ranges finish in any order.

    MD5 and SHA cannot be split, so this follows the contiguous prefix that is on disk and
    reads it back from the page cache in a worker thread, alongside the download rather than
    after it.
    """

    def __init__(self, fd: int, hasher: Hasher, size: int, executor: ThreadPoolExecutor) -> None:
        self._fd = fd
        self._hasher = hasher
        self._size = size
        self._executor = executor
        self._finished: dict[int, int] = {}
        self._hashed = 0
        self._ready = asyncio.Event()

    def range_done(self, byte_range: Range) -> None:
        self._finished[byte_range.start] = byte_range.end
        self._ready.set()

    async def run(self) -> bytes:
        loop = asyncio.get_running_loop()
        while self._hashed < self._size:
            await self._ready.wait()
            self._ready.clear()
            while self._hashed in self._finished:
                end = self._finished.pop(self._hashed)
                await loop.run_in_executor(
                    self._executor, _hash_span, self._fd, self._hasher, self._hashed, end, 1 << 20
                )
                self._hashed = end
        return self._hasher.digest()


class Downloader:
    """Downloads objects into files under one global limit on requests in flight.

    Memory is bounded by max_concurrency x chunk_size whatever the file sizes: each request
    streams its range through one chunk buffer straight into the file.
    """

    def __init__(
        self,
        settings: S3Settings,
        observer: TransferObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        writeback: Writeback | None = None,
    ) -> None:
        self._settings = settings
        self._observer: TransferObserver = observer or NullObserver()
        self._retry = RetryPolicy(settings.max_attempts, self._observer, sleep)
        self._requests = asyncio.Semaphore(settings.max_concurrency)
        self._executor = ThreadPoolExecutor(
            max_workers=max(4, (os.cpu_count() or 2) * 2), thread_name_prefix="syncd-io"
        )
        # Each pump thread holds one request for the whole range, so there are as many as
        # requests may be in flight.
        self._reader = (
            BlockingRangeReader(
                settings.chunk_size, _READ_TIMEOUT, settings.ca_bundle, settings.verify_ssl
            )
            if settings.threaded_reads
            else None
        )
        self._pumps = ThreadPoolExecutor(
            max_workers=settings.max_concurrency, thread_name_prefix="syncd-get"
        )
        self._urls: dict[tuple[str, bool], tuple[str, float]] = {}
        self._writeback = writeback or Writeback()

    def close(self) -> None:
        self._writeback.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._pumps.shutdown(wait=False, cancel_futures=True)

    # ---- S3 ---------------------------------------------------------------------------------

    async def download_s3(
        self,
        store: S3ObjectStore,
        location: S3Location,
        obj: RemoteObject,
        dest: Path,
        progress: Progress,
        resume: ResumeState | None = None,
    ) -> FileEntry:
        """Download one object to `dest`, verified; a mismatch is retried, then raised.

        With `resume`, ranges a previous (killed) attempt completed are not fetched again.
        """
        attempts = 2
        for attempt in range(1, attempts + 1):
            tally = _Tally(progress)
            try:
                return await self._download_s3_once(
                    store, location, obj, dest, tally, resume if attempt == 1 else None
                )
            except ChecksumMismatchError:
                tally.take_back()  # the whole file is fetched again, trusting nothing
                self._observer.checksum_failed(obj.path)
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    async def _download_s3_once(
        self,
        store: S3ObjectStore,
        location: S3Location,
        obj: RemoteObject,
        dest: Path,
        progress: Progress,
        resume: ResumeState | None,
    ) -> FileEntry:
        multipart_etag_listed = obj.etag is not None and "-" in obj.etag
        if obj.size <= self._settings.part_size and not multipart_etag_listed:
            return await self._download_whole(store, location, obj, dest, progress)
        facts = await self._object_facts(store, location, obj)
        check = choose_check(facts, self._settings.verify)
        ranges = plan_ranges(
            facts.size,
            self._settings.part_size,
            upload_part_size=facts.first_part_size,
            aligned=check.needs_aligned_parts,
        )
        part_map, already = await _resumable(resume, obj, facts, ranges, dest)
        fd = await _opened(open_preallocated, dest, facts.size, bool(already))
        writing = threading.Lock()
        hashed: dict[Range, RangeHashers] = {}
        try:
            ordered = None
            if check.method == "whole":
                assert check.algorithm is not None
                ordered = OrderedHasher(fd, new_hasher(check.algorithm), facts.size, self._executor)

            async def fetch(byte_range: Range) -> None:
                if (byte_range.start, byte_range.end) in already:
                    hashed[byte_range] = await self._rehash_range(fd, byte_range, check)
                    progress(byte_range.length)
                else:
                    hashed[byte_range] = await self._fetch_range(
                        store, location, byte_range, facts.etag, fd, check, progress, writing
                    )
                    if part_map is not None:
                        await asyncio.to_thread(part_map.mark, byte_range.start, byte_range.end)
                if ordered is not None:
                    ordered.range_done(byte_range)

            try:
                async with asyncio.TaskGroup() as group:
                    for byte_range in ranges:
                        group.create_task(fetch(byte_range))
                    whole_digest = group.create_task(ordered.run()) if ordered else None
            except BaseExceptionGroup as failed:
                raise primary_error(failed) from failed
            written = await asyncio.to_thread(os.fstat, fd)
        finally:
            os.close(fd)
        candidates = _candidates(
            check,
            [part for r in ranges for part in _per_part(r, hashed[r].check)],
            whole_digest.result() if whole_digest else None,
        )
        entry = _verified_entry(obj, facts, check, candidates, written)
        return replace(entry, range_crc32c=tuple((r.end, hashed[r].crc32c.value) for r in ranges))

    async def _object_facts(
        self, store: S3ObjectStore, location: S3Location, obj: RemoteObject
    ) -> ObjectFacts:
        """HEAD the object (and its first part, for a multipart upload's part layout)."""
        facts = await self._retry.run(f"HEAD {location.uri}", lambda: store.head(location))
        _check_same_object(location, obj, facts)
        if "-" in facts.etag or any("-" in value for value in facts.checksums.values()):
            first = await self._retry.run(
                f"HEAD part 1 of {location.uri}", lambda: store.head(location, part_number=1)
            )
            if first.parts_count:  # one part counts: its checksums are per part too
                facts = replace(facts, parts_count=first.parts_count, first_part_size=first.size)
        return facts

    async def _rehash_range(self, fd: int, byte_range: Range, check: CheckPlan) -> RangeHashers:
        """A range a killed attempt left on disk: hashed from disk, fetched not again."""
        hashers = RangeHashers(_range_hasher(check, byte_range))
        await asyncio.get_running_loop().run_in_executor(
            self._executor, _hash_span, fd, hashers, byte_range.start, byte_range.end, 4 << 20
        )
        return hashers

    async def repair_s3(
        self,
        store: S3ObjectStore,
        location: S3Location,
        entry: FileEntry,
        dest: Path,
        spans: tuple[Span, ...],
        progress: Progress,
    ) -> FileEntry:
        """Fetch `spans` of a published object again into `dest`, a copy of its file.

        Each range must hash to the CRC32C recorded when the object was first downloaded
        and verified; any other answer is a ChecksumMismatchError (the caller then fetches
        the whole object).
        """
        etag = entry.etag
        assert etag is not None
        size_only = CheckPlan("size")  # the ranges feed only their CRC32C
        fd = await _opened(open_existing, dest)
        writing = threading.Lock()
        try:

            async def fetch(span: Span) -> None:
                byte_range = Range(span.start, span.end, 0)
                hashers = await self._fetch_range(
                    store, location, byte_range, etag, fd, size_only, progress, writing
                )
                if hashers.crc32c.value != span.crc32c:
                    raise ChecksumMismatchError(
                        f"{entry.path} {byte_range.header}",
                        "crc32c",
                        encode_crc(Algorithm.CRC32C, span.crc32c),
                        encode_crc(Algorithm.CRC32C, hashers.crc32c.value),
                    )

            try:
                async with asyncio.TaskGroup() as group:
                    for span in spans:
                        group.create_task(fetch(span))
            except BaseExceptionGroup as failed:
                raise primary_error(failed) from failed
            written = await asyncio.to_thread(os.fstat, fd)
        finally:
            os.close(fd)
        return replace(entry, verified_at=time.time(), mtime_ns=written.st_mtime_ns)

    async def _download_whole(
        self,
        store: S3ObjectStore,
        location: S3Location,
        obj: RemoteObject,
        dest: Path,
        progress: Progress,
    ) -> FileEntry:
        """A small object in one GET; its checksum headers come with the response."""

        async def attempt() -> _Whole:
            async with self._requests:
                self._observer.in_flight(1)
                try:
                    if self._reader is not None:
                        try:
                            return await self._pump_whole(
                                self._reader, store, location, obj, dest, progress
                            )
                        except SourceError as refused:
                            log.info("threaded GET refused (%s); reading via aiobotocore", refused)
                    return await self._stream_whole(store, location, obj, dest, progress)
                finally:
                    self._observer.in_flight(-1)

        whole = await self._retry.run(f"GET {location.uri}", attempt)
        check, hashers = whole.check, whole.hashers
        candidates = (
            {} if hashers.check is None else {check.label: _encode_digest(check, hashers.check)}
        )
        assert whole.written is not None
        entry = _verified_entry(obj, whole.facts, check, candidates, whole.written)
        crcs = ((whole.facts.size, hashers.crc32c.value),) if whole.facts.size else ()
        return replace(entry, range_crc32c=crcs)

    def _start_whole(self, location: S3Location, obj: RemoteObject, facts: ObjectFacts) -> _Whole:
        """Before the first byte of a whole GET: the same object as listed? which check?"""
        _check_same_object(location, obj, facts)
        check = choose_check(facts, self._settings.verify)
        return _Whole(
            facts, check, RangeHashers(new_hasher(check.algorithm) if check.algorithm else None)
        )

    async def _pump_whole(
        self,
        reader: BlockingRangeReader,
        store: S3ObjectStore,
        location: S3Location,
        obj: RemoteObject,
        dest: Path,
        progress: Progress,
    ) -> _Whole:
        """One whole-object GET read by a pump thread, headers and all."""
        url = await self._presigned(store, location, checksums=True)
        started: list[_Whole] = []

        def read(abort: Abort, counted: Progress) -> None:
            fds: list[int] = []

            def start(headers: dict[str, str]) -> Write:
                whole = self._start_whole(location, obj, facts_from_http_headers(headers))
                started.append(whole)
                fd = _locally(open_preallocated, dest, whole.facts.size)
                fds.append(fd)
                return _writer(fd, whole.hashers, counted)

            try:
                reader.read_object(url, obj.etag, start, abort)
                started[-1].written = _locally(os.fstat, fds[-1])
            finally:
                for fd in fds:
                    os.close(fd)

        await self._in_thread(read, progress)
        return started[-1]

    async def _stream_whole(
        self,
        store: S3ObjectStore,
        location: S3Location,
        obj: RemoteObject,
        dest: Path,
        progress: Progress,
    ) -> _Whole:
        """One whole-object GET streamed through the event loop (aiobotocore)."""
        async with store.get(location, None, obj.etag) as (facts, body):
            assert facts is not None
            whole = self._start_whole(location, obj, facts)
            fd = await _opened(open_preallocated, dest, facts.size)
            try:
                await self._stream(body.read, fd, 0, facts.size, whole.hashers, progress)
                whole.written = await asyncio.to_thread(os.fstat, fd)
            finally:
                os.close(fd)
        return whole

    async def _fetch_range(
        self,
        store: S3ObjectStore,
        location: S3Location,
        byte_range: Range,
        etag: str,
        fd: int,
        check: CheckPlan,
        progress: Progress,
        writing: threading.Lock,
    ) -> RangeHashers:
        target = _RangeGet(store, location, byte_range, etag, fd, writing)

        async def attempt() -> RangeHashers:
            hasher = RangeHashers(_range_hasher(check, byte_range))
            async with self._requests:
                self._observer.in_flight(1)
                try:
                    if self._reader is None:
                        await self._stream_range(target, hasher, progress)
                        return hasher
                    try:
                        await self._pump_range(self._reader, target, hasher, progress)
                    except SourceError as refused:
                        # Refused before any byte (the status line): aiobotocore follows what
                        # a presigned URL cannot, such as a redirect to the bucket's region,
                        # and otherwise reports the refusal in its own words.
                        log.info("threaded GET refused (%s); reading through aiobotocore", refused)
                        hasher = RangeHashers(_range_hasher(check, byte_range))
                        await self._stream_range(target, hasher, progress)
                finally:
                    self._observer.in_flight(-1)
            return hasher

        return await self._retry.run(f"GET {location.uri} {byte_range.header}", attempt)

    async def _stream_range(self, get: _RangeGet, hasher: Hasher, progress: Progress) -> None:
        """One ranged GET streamed through the event loop (aiobotocore)."""
        span = get.byte_range
        async with get.store.get(get.location, span, get.etag) as (_, body):
            await self._stream(body.read, get.fd, span.start, span.length, hasher, progress)
        self._writeback.range_done(get.fd, span.start, span.length)

    async def _pump_range(
        self, reader: BlockingRangeReader, get: _RangeGet, hasher: Hasher, progress: Progress
    ) -> None:
        """One ranged GET read by a pump thread."""
        url = await self._presigned(get.store, get.location, checksums=False)

        def read(abort: Abort, counted: Progress) -> None:
            write = _writer(get.fd, hasher, counted, get.writing)
            reader.read_range(url, get.byte_range, get.etag, write, abort)
            self._writeback.range_done(get.fd, get.byte_range.start, get.byte_range.length)

        await self._in_thread(read, progress)

    async def _in_thread(self, read: Callable[[Abort, Progress], None], progress: Progress) -> None:
        """Run `read(abort, counted)` in a pump thread; the byte counts it reports through
        `counted` reach progress and metrics on the event loop."""
        loop = asyncio.get_running_loop()
        abort = Abort()
        tally = _Tally(progress)

        def account(count: int) -> None:
            tally(count)
            self._observer.bytes_downloaded(count)

        def counted(count: int) -> None:
            loop.call_soon_threadsafe(account, count)

        future = loop.run_in_executor(self._pumps, read, abort, counted)
        try:
            await _until_thread_done(future, abort)
        except BaseException as exc:
            # The retry fetches these bytes again. The thread has stopped, and its progress
            # callbacks were queued before its result, so they have all run by now.
            tally.take_back()
            if isinstance(exc, LocalWriteError):
                raise exc.error from None  # the disk's failure, not the network's
            raise

    async def _presigned(self, store: S3ObjectStore, location: S3Location, checksums: bool) -> str:
        """A presigned URL per object, renewed well before it expires (valid 1 h).

        `checksums`: signed to ask for the object's checksum headers (whole GETs).
        """
        now = time.monotonic()
        key = (location.uri, checksums)
        cached = self._urls.get(key)
        if cached is not None and now - cached[1] < _URL_RENEW_AFTER:
            return cached[0]
        url = await store.presign_get(location, expires=3600, checksums=checksums)
        if len(self._urls) >= 4096:
            # Bounded: thousands of small objects each sign once; dropping a URL only costs
            # signing it again (~0.08 ms).
            self._urls.clear()
        self._urls[key] = (url, now)
        return url

    async def _stream(
        self,
        read: Callable[[int], Awaitable[bytes]],
        fd: int,
        offset: int,
        expected: int,
        hasher: Hasher | None,
        progress: Progress,
    ) -> int:
        """Copy a response body to fd at offset; exactly `expected` bytes or RetryableError.

        On failure the progress reported so far is taken back: the retry fetches it again.
        """
        loop = asyncio.get_running_loop()
        chunk_size = self._settings.chunk_size
        tally = _Tally(progress)
        written = 0
        pending: list[bytes] = []
        pending_size = 0
        try:
            while True:
                data = await read(chunk_size - pending_size)
                if data:
                    pending.append(data)
                    pending_size += len(data)
                    if written + pending_size > expected:
                        raise RetryableError(
                            f"body longer than the {expected} bytes asked for", "bad_response"
                        )
                if pending and (
                    pending_size >= chunk_size or len(pending) >= _MAX_PIECES or not data
                ):
                    block, size = pending, pending_size
                    pending, pending_size = [], 0
                    # Waited for even when cancelled: the caller closes `fd` next, and a
                    # write still running could land in whatever file reuses its number.
                    await _thread_done(
                        loop.run_in_executor(
                            self._executor, _write_and_hash, fd, block, offset + written, hasher
                        )
                    )
                    written += size
                    tally(size)
                    self._observer.bytes_downloaded(size)
                if not data:
                    break
            if written != expected:
                raise RetryableError(f"short body: {written} of {expected} bytes", "bad_response")
        except BaseException:
            tally.take_back()
            raise
        return written

    # ---- through the MLflow server ----------------------------------------------------------

    async def download_proxied(
        self,
        proxy: MlflowArtifactProxy,
        path: str,
        obj: RemoteObject,
        dest: Path,
        progress: Progress,
    ) -> FileEntry:
        """Stream one artifact through the MLflow server; only its size can be checked."""

        async def attempt() -> tuple[str, os.stat_result]:
            hasher = hashlib.md5(usedforsecurity=False)
            async with self._requests:
                self._observer.in_flight(1)
                try:
                    fd = await _opened(open_preallocated, dest, obj.size)
                    try:
                        async with proxy.get(path) as stream:
                            await self._stream(stream.read, fd, 0, obj.size, hasher, progress)
                        written = await asyncio.to_thread(os.fstat, fd)
                    finally:
                        os.close(fd)
                finally:
                    self._observer.in_flight(-1)
            return hasher.hexdigest(), written

        md5, written = await self._retry.run(f"GET {path} via MLflow", attempt)
        return FileEntry(
            path=obj.path,
            size=obj.size,
            etag=None,
            verified_by="size",
            checksum=md5,
            note="read through the MLflow server, which offers no checksum: size checked, "
            "MD5 recorded for later verification",
            verified_at=time.time(),
            mtime_ns=written.st_mtime_ns,
        )


async def _until_thread_done(future: asyncio.Future[None], abort: Abort) -> None:
    """Await a pump thread; when cancelled, stop it and still wait for it to finish.

    The thread writes into a file descriptor that the caller closes once this returns: it
    must never outlive the await, even when the await is cancelled (SIGTERM, a sibling part
    failing). `abort` shuts its socket down, so the wait is short.
    """
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        abort()
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        if not future.cancelled():
            future.exception()  # the thread's "aborted": expected, and not worth a log line
        raise


async def _resumable(
    resume: ResumeState | None,
    obj: RemoteObject,
    facts: ObjectFacts,
    ranges: list[Range],
    dest: Path,
) -> tuple[PartMap | None, set[tuple[int, int]]]:
    """The object's part map, and the ranges a killed attempt finished for this very object
    (same ETag, size and range plan) that are still on disk."""
    if resume is None:
        return None, set()
    identity = {
        "etag": facts.etag,
        "size": facts.size,
        "ranges": [len(ranges), ranges[0].length if ranges else 0],
    }
    part_map = await asyncio.to_thread(resume.for_file, obj.path, identity)
    if not await asyncio.to_thread(dest.exists):
        return part_map, set()
    return part_map, part_map.done()


def _range_hasher(check: CheckPlan, byte_range: Range) -> Hasher | None:
    """The hasher a range feeds for this check (None: nothing per range)."""
    algorithm = check.algorithm
    if algorithm is None or check.method == "whole" or check.method == "size":
        return None
    if check.method == "full-crc":
        return CrcHasher(algorithm)  # any cut combines into the object's CRC
    if byte_range.part_length:
        return PartHashers(byte_range, lambda: new_hasher(algorithm))
    return new_hasher(algorithm)


class PartHashers:
    """One hasher per upload part of a range that covers several, fed in byte order."""

    def __init__(self, byte_range: Range, factory: Callable[[], Hasher]) -> None:
        self.parts = [(end, factory()) for end in byte_range.part_ends()]
        self._starts = [byte_range.start, *(end for end, _ in self.parts[:-1])]
        self._position = byte_range.start
        self._index = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        view = memoryview(data)
        while len(view):
            end, hasher = self.parts[self._index]
            take = min(len(view), end - self._position)
            hasher.update(view[:take])
            self._position += take
            view = view[take:]
            if self._position == end and self._index + 1 < len(self.parts):
                self._index += 1

    def digest(self) -> bytes:
        raise TypeError("a range of several parts has one digest per part")

    def lengths(self) -> list[tuple[int, Hasher]]:
        return [(end - start, h) for start, (end, h) in zip(self._starts, self.parts, strict=True)]


def _per_part(byte_range: Range, hasher: Hasher | None) -> list[tuple[int, Hasher | None]]:
    """(length, hasher) of each upload part a range's check hashed."""
    if isinstance(hasher, PartHashers):
        return list(hasher.lengths())
    return [(byte_range.length, hasher)]


def _check_same_object(location: S3Location, obj: RemoteObject, facts: ObjectFacts) -> None:
    """The object answering now must be the one listed: the manifest records the listing."""
    if (obj.etag is not None and facts.etag != obj.etag) or facts.size != obj.size:
        raise ObjectChangedError(location.uri, obj.etag or "")


def _encode_digest(check: CheckPlan, hasher: Hasher) -> str:
    if isinstance(hasher, CrcHasher):
        return encode_crc(hasher.algorithm, hasher.value)
    if check.method == "whole" and check.algorithm is not None and check.algorithm.value == "md5":
        return hasher.digest().hex()
    return base64.b64encode(hasher.digest()).decode()


def _candidates(
    check: CheckPlan, parts: list[tuple[int, Hasher | None]], whole: bytes | None
) -> dict[str, str]:
    """What the downloaded bytes give for the value S3 states, keyed by the check's label."""
    if check.method == "size":
        return {}
    algorithm = check.algorithm
    assert algorithm is not None
    if check.method == "whole":
        assert whole is not None
        value = whole.hex() if algorithm.value == "md5" else base64.b64encode(whole).decode()
        return {check.label: value}
    if check.method == "multipart-etag":
        return {check.label: multipart_etag([h.digest() for _, h in parts if h is not None])}
    candidates = {}
    if check.method in ("full-crc", "crc-parts"):
        crcs = []
        for length, hasher in parts:
            assert isinstance(hasher, CrcHasher)
            crcs.append((hasher.value, length))
        candidates[algorithm.value] = encode_crc(algorithm, combine_crcs(algorithm, crcs))
    if check.method in ("composite", "crc-parts"):
        digests = [hasher.digest() for _, hasher in parts if hasher is not None]
        candidates[f"{algorithm.value}-composite"] = composite_checksum(algorithm, digests)
    return candidates


def _verified_entry(
    obj: RemoteObject,
    facts: ObjectFacts,
    check: CheckPlan,
    candidates: dict[str, str],
    written: os.stat_result,
) -> FileEntry:
    size = written.st_size
    if size != facts.size or size != obj.size:
        raise ChecksumMismatchError(obj.path, "size", str(obj.size), str(size))
    verified_by = check.label
    if check.method != "size":
        assert check.expected is not None
        matched = [
            label for label, value in candidates.items() if checksums_match(check.expected, value)
        ]
        if not matched:
            raise ChecksumMismatchError(
                obj.path, check.label, check.expected, " or ".join(candidates.values())
            )
        verified_by = matched[0]
    return FileEntry(
        path=obj.path,
        size=facts.size,
        etag=facts.etag,
        verified_by=verified_by,
        checksum=check.expected,
        part_size=facts.first_part_size,
        note=check.note,
        verified_at=time.time(),
        mtime_ns=written.st_mtime_ns,
    )
