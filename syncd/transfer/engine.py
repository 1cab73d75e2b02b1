"""The transfer engine: objects into files through a reader, verified as they stream.

`Downloader.download` picks the shape of a transfer (one whole GET for a small object, or for
any from a store without ranged reads; parallel ranged GETs into a preallocated file otherwise,
resumable), and
`_fetch` runs every GET of either shape the same way: a request slot, the in-flight gauge,
retries, and progress taken back when an attempt fails. What the bytes are checked against
is decided in `core.verification`; how they are read is the reader's business.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from syncd.core.checksum import Algorithm, Hasher, encode_crc, encode_digest, new_hasher
from syncd.core.completion import all_or_first_error
from syncd.core.manifest import FileEntry, RemoteObject, Span
from syncd.core.plan import CheckPlan, ObjectFacts, Range, choose_check, plan_ranges
from syncd.core.verification import (
    RangeHashers,
    Written,
    candidates,
    check_same_object,
    verified_entry,
)
from syncd.errors import ChecksumMismatchError, LocalWriteError
from syncd.local.direct import RangeWriter
from syncd.local.files import open_existing, open_preallocated
from syncd.local.resume import PartMap, ResumeState
from syncd.local.writeback import Writeback
from syncd.remote.retry import RetryPolicy
from syncd.remote.store import Location, ObjectStore, StoreLookup
from syncd.settings import S3Settings
from syncd.transfer.observer import NullObserver, TransferObserver
from syncd.transfer.ordered import OrderedHasher
from syncd.transfer.readers import GetRequest, Reader, ReaderByStore, reader_for
from syncd.transfer.sinks import Decide, RangeSink, Sink, WholeSink
from syncd.transfer.steps import open_writer, rehash

__all__ = ["Downloader", "NullObserver", "Progress", "TransferObserver"]

S = TypeVar("S", bound=Sink)
log = logging.getLogger(__name__)
Progress = Callable[[int], None]


@dataclass(frozen=True)
class _Transfer:
    """What one object's transfer is about."""

    store: ObjectStore[Any]
    location: Location  # the object's own location
    obj: RemoteObject  # as listed: the manifest records the listing
    dest: Path
    progress: Progress


class Downloader:
    """Downloads objects into files under one global limit on requests in flight. Memory is
    bounded by max_concurrency x chunk_size whatever the file sizes: each request streams its
    range through one chunk buffer straight into the file."""

    def __init__(
        self,
        settings: S3Settings,
        stores: StoreLookup,
        observer: TransferObserver | None = None,
        *,
        reader: Reader | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        writeback: Writeback | None = None,
        io: ThreadPoolExecutor | None = None,
    ) -> None:
        """`stores`: which store reads a location; `reader`: how bytes are read (default: each
        store's `reader_for`); `io`: the pool for file work and hashing (default: one of its
        own, closed with it)."""
        self._settings = settings
        self._stores = stores
        self._observer: TransferObserver = observer or NullObserver()
        self._retry = RetryPolicy(settings.max_attempts, self._observer, sleep)
        self._requests = asyncio.Semaphore(settings.max_concurrency)
        self._owns_io = io is None
        self._io = io or ThreadPoolExecutor(
            max_workers=max(4, (os.cpu_count() or 2) * 2), thread_name_prefix="syncd-io"
        )
        self._reader = reader or ReaderByStore(lambda store: reader_for(settings, store, self._io))
        self._writeback = writeback or Writeback()
        self.direct_files = 0  # files whose ranges skipped the page cache (tests count them)

    def close(self) -> None:
        self._writeback.close()
        self._reader.close()
        if self._owns_io:
            self._io.shutdown(wait=False, cancel_futures=True)

    async def download(
        self,
        location: Location,
        obj: RemoteObject,
        dest: Path,
        progress: Progress,
        resume: ResumeState | None = None,
    ) -> FileEntry:
        """Download one object to `dest`, verified as well as its source allows; a mismatch
        is fetched again once, trusting nothing, then raised.

        With `resume`, ranges a previous (killed) attempt completed are not fetched again.
        """
        store = await self._stores.store_for(location)
        transfer = _Transfer(store, location, obj, dest, progress)
        try:
            return await self._download_once(transfer, resume)
        except ChecksumMismatchError:
            self._observer.checksum_failed(obj.path)
        try:
            return await self._download_once(transfer, None)
        except ChecksumMismatchError:
            self._observer.checksum_failed(obj.path)
            raise

    async def _download_once(self, transfer: _Transfer, resume: ResumeState | None) -> FileEntry:
        tally = _Tally(transfer.progress)
        counted = replace(transfer, progress=tally)
        try:
            location, obj = transfer.location, transfer.obj
            if not transfer.store.capabilities.ranged:
                return await self._whole(counted, _unverified(transfer.store, obj))
            multipart_etag_listed = obj.etag is not None and "-" in obj.etag
            if obj.size <= self._settings.part_size and not multipart_etag_listed:
                return await self._whole(counted, _decide(location, obj, self._settings.verify))
            return await self._ranged(counted, resume)
        except ChecksumMismatchError:
            tally.take_back()  # the whole file is fetched again
            raise

    async def _whole(self, transfer: _Transfer, decide: Decide) -> FileEntry:
        """A small object in one GET; its checksum headers come with the response."""
        obj = transfer.obj
        request = GetRequest(transfer.store, transfer.location, obj.size, etag=obj.etag)
        sink = await self._fetch(
            request, lambda counted: WholeSink(transfer.dest, decide, counted), transfer.progress
        )  # the file is closed: by the sink's end, or by `_fetch` when an attempt failed
        assert sink.facts is not None
        assert sink.hashers is not None
        assert sink.written is not None
        check, hashers = sink.check, sink.hashers
        found = candidates(check, [(obj.size, hashers.check)], hashers.check)
        crcs = ((obj.size, hashers.crc32c.value),) if obj.size else ()
        if not transfer.store.capabilities.ranged:  # `_unverified`: an MD5 to record
            assert hashers.check is not None
            entry = verified_entry(obj, sink.facts, check, found, sink.written)
            return replace(entry, etag=None, checksum=encode_digest(Algorithm.MD5, hashers.check))
        return verified_entry(obj, sink.facts, check, found, sink.written, crcs)

    async def _ranged(self, transfer: _Transfer, resume: ResumeState | None) -> FileEntry:
        """A large object in parallel ranged GETs pinned to its ETag, into one file."""
        location, obj, progress = transfer.location, transfer.obj, transfer.progress
        facts = await self.object_facts(location, obj)
        check = choose_check(facts, self._settings.verify)
        ranges = plan_ranges(
            facts.size,
            self._settings.part_size,
            upload_part_size=facts.first_part_size,
            aligned=check.needs_aligned_parts,
        )
        part_map, already = await _resumable(resume, obj, facts, ranges, transfer.dest)
        writer = await self._opened(open_preallocated, transfer.dest, facts.size, bool(already))
        fd = writer.fd
        hashed: dict[Range, RangeHashers] = {}
        ordered = None
        if check.method == "whole":
            assert check.algorithm is not None
            hasher = new_hasher(check.algorithm)
            ordered = OrderedHasher(writer.hash_back, hasher, facts.size, self._io)

        async def one(byte_range: Range) -> None:
            if (byte_range.start, byte_range.end) in already:
                hashed[byte_range] = await self._rehash(fd, byte_range, check)
                progress(byte_range.length)
            else:
                request = GetRequest(transfer.store, location, obj.size, byte_range, facts.etag)
                sink = await self._fetch(
                    request,
                    lambda counted: RangeSink(writer, check, byte_range, counted, self._writeback),
                    progress,
                )
                hashed[byte_range] = sink.hashers
                if part_map is not None:
                    await asyncio.to_thread(part_map.mark, byte_range.start, byte_range.end)
            if ordered is not None:
                ordered.range_done(byte_range)

        try:
            whole = await _all(ranges, one, ordered)
            stat = await asyncio.to_thread(os.fstat, fd)
        finally:
            writer.close()
        parts = [part for r in ranges for part in hashed[r].parts()]
        crcs = tuple((r.end, hashed[r].crc32c.value) for r in ranges)
        written = Written(stat.st_size, stat.st_mtime_ns)
        return verified_entry(obj, facts, check, candidates(check, parts, whole), written, crcs)

    async def repair(
        self,
        location: Location,
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
        store = await self._stores.store_for(location)
        writer = await self._opened(open_existing, dest)

        async def one(span: Span) -> None:
            byte_range = Range(span.start, span.end)
            sink = await self._fetch(
                GetRequest(store, location, entry.size, byte_range, etag),
                lambda counted: RangeSink(writer, size_only, byte_range, counted, self._writeback),
                progress,
            )
            if sink.hashers.crc32c.value != span.crc32c:
                raise ChecksumMismatchError(
                    f"{entry.path} {byte_range.header}",
                    "crc32c",
                    encode_crc(Algorithm.CRC32C, span.crc32c),
                    encode_crc(Algorithm.CRC32C, sink.hashers.crc32c.value),
                )

        try:
            await _all(list(spans), one, None)
            stat = await asyncio.to_thread(os.fstat, writer.fd)
        finally:
            writer.close()
        return replace(entry, verified_at=time.time(), mtime_ns=stat.st_mtime_ns)

    async def _fetch(
        self, request: GetRequest, make_sink: Callable[[Progress], S], progress: Progress
    ) -> S:
        """One GET through the reader, retried; a fresh sink for every attempt.

        Holds one of the request slots for the whole attempt; the byte counts the sink
        reports from its thread reach `progress` and the metrics on the event loop, and an
        attempt that fails takes its bytes back (the retry fetches them again).
        """
        loop = asyncio.get_running_loop()

        async def attempt() -> S:
            tally = _Tally(progress)

            def account(count: int) -> None:
                tally(count)
                self._observer.bytes_downloaded(count)

            def counted(count: int) -> None:  # called from the reader's threads
                loop.call_soon_threadsafe(account, count)

            sink = make_sink(counted)
            async with self._requests:
                self._observer.in_flight(1)
                try:
                    await self._reader.read(request, sink)
                    return sink
                except BaseException as exc:
                    if isinstance(sink, WholeSink):
                        sink.close()
                    # The reader's threads have stopped, and their counts were queued before
                    # their results, so every count has reached the tally by now.
                    tally.take_back()
                    if isinstance(exc, LocalWriteError):
                        raise exc.error from None  # the disk's failure, not the network's
                    raise
                finally:
                    self._observer.in_flight(-1)

        return await self._retry.run(request.describe(), attempt)

    async def _opened(self, opener: Callable[..., int], *args: object) -> RangeWriter:
        writer = await open_writer(self._settings.direct_writes, opener, *args)
        self.direct_files += writer.direct
        return writer

    async def states_facts(self, location: Location) -> bool:
        """Whether the location's store states object facts (size, token, checksums)."""
        return (await self._stores.store_for(location)).capabilities.ranged

    async def object_facts(self, location: Location, obj: RemoteObject) -> ObjectFacts:
        """The object's facts now (a HEAD; for S3's multipart uploads, the part layout too),
        checked to be the object listed."""
        store = await self._stores.store_for(location)
        facts = await self._retry.run(f"HEAD {location.uri}", lambda: store.facts(location))
        check_same_object(location.uri, obj, facts)
        return facts

    async def _rehash(self, fd: int, byte_range: Range, check: CheckPlan) -> RangeHashers:
        """A range a killed attempt left on disk: hashed from disk, not fetched again."""
        return await rehash(self._io, fd, byte_range, check)


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


T = TypeVar("T")


async def _all(
    items: list[T], one: Callable[[T], Coroutine[Any, Any, None]], ordered: OrderedHasher | None
) -> Hasher | None:
    """`one(item)` for every item at once (the request slots bound them), and the ordered
    hasher alongside; the first failure raised as itself, the others cancelled."""
    jobs: list[Awaitable[object]] = [one(item) for item in items]
    if ordered is not None:
        jobs.append(ordered.run())
    results = await all_or_first_error(jobs)
    return results[-1] if ordered is not None else None  # type: ignore[return-value]


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


def _unverified(store: ObjectStore[Any], obj: RemoteObject) -> Decide:
    """For a store that states no checksum (the MLflow proxy): the size is checked, and an MD5
    recorded (checked against nothing) for a later deep verification."""
    check = CheckPlan("size", Algorithm.MD5, note=store.capabilities.unverified)

    def decide(facts: ObjectFacts | None) -> tuple[ObjectFacts, CheckPlan]:
        return ObjectFacts(size=obj.size, etag=""), check

    return decide


def _decide(location: Location, obj: RemoteObject, verify: Literal["checksum", "size"]) -> Decide:
    """For a whole GET: the same object as listed? which check do its headers call for?"""

    def decide(facts: ObjectFacts | None) -> tuple[ObjectFacts, CheckPlan]:
        assert facts is not None  # a ranged store answers a whole GET with its facts
        check_same_object(location.uri, obj, facts)
        return facts, choose_check(facts, verify)

    return decide
