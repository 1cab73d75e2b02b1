"""Readers: one GET (ranged, or a whole object with its checksum headers) into a sink.

Every way syncd reads bytes is one class behind `Reader.read(request, sink)`, over any store
of the source interface (syncd.remote.store):

- `ThreadedReader`: pump threads on the store's plain HTTP requests (`blocking_get`), the fast
  path, where the store offers them (`capabilities.plain_http`);
- `StreamReader`: the store's own async GET (aiobotocore, aiohttp) on the event loop, for what
  plain requests cannot follow and for stores without them;
- `FallbackReader`: one reader, then another where the first is refused before any byte;
- `ReaderByStore`: each request to the reader of the store its location belongs to.

A reader neither retries, nor counts requests in flight, nor keeps progress: the engine's
`_fetch` does that once for all of them. A reader must not return (or raise) while a thread
of its own may still call the sink: the engine closes the file next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from syncd.core.completion import to_completion
from syncd.core.plan import ObjectFacts, Range
from syncd.errors import RetryableError, SourceError
from syncd.local.files import Buffer
from syncd.remote.store import Location, ObjectStore
from syncd.settings import S3Settings
from syncd.transfer.blocking_get import Abort, BlockingRangeReader
from syncd.transfer.sinks import Sink

__all__ = [
    "FallbackReader",
    "GetRequest",
    "Reader",
    "ReaderByStore",
    "StreamReader",
    "ThreadedReader",
    "reader_for",
]

log = logging.getLogger(__name__)

READ_TIMEOUT = 60.0  # seconds without a byte before a request is given up (and retried)
_MAX_PIECES = 512  # a block is written before it holds more received chunks than this


@dataclass(frozen=True)
class GetRequest:
    """One GET of an object in `store`: a range pinned to its version token, or (no range)
    the whole object, pinned when the listing gave a token; `size` is the listed size."""

    store: ObjectStore[Any]
    location: Location
    size: int
    byte_range: Range | None = None
    etag: str | None = None

    def describe(self) -> str:
        where = f" {self.byte_range.header}" if self.byte_range else ""
        via = "" if self.store.capabilities.ranged else " via MLflow"
        return f"GET {self.location.uri}{where}{via}"


class Reader(Protocol):
    async def read(self, request: GetRequest, sink: Sink) -> None: ...

    def close(self) -> None: ...


class ThreadedReader:
    """Pump threads, one request each for a whole range, on the store's plain requests."""

    def __init__(self, settings: S3Settings) -> None:
        self._blocking = BlockingRangeReader(
            settings.chunk_size, READ_TIMEOUT, settings.ca_bundle, settings.verify_ssl
        )
        # As many threads as requests may be in flight: each holds one for its whole range.
        self._pumps = ThreadPoolExecutor(
            max_workers=settings.max_concurrency, thread_name_prefix="syncd-get"
        )

    def close(self) -> None:
        self._pumps.shutdown(wait=False, cancel_futures=True)

    async def read(self, request: GetRequest, sink: Sink) -> None:
        store = request.store
        get = await store.plain_get(request.location, request.byte_range, request.etag)
        abort = Abort()

        def write(data: memoryview, offset: int) -> None:
            sink.write((data,), offset)

        def pump() -> None:
            if request.byte_range is None:

                def start(headers: dict[str, str]) -> Callable[[memoryview, int], None]:
                    sink.begin(store.facts_from_headers(headers, request.etag))
                    return write

                self._blocking.read_object(get, start, abort)
            else:
                sink.begin(None)
                self._blocking.read_range(get, request.byte_range, write, abort)
            sink.end()

        loop = asyncio.get_running_loop()
        # Cancelled: `abort` shuts the socket down, so the wait for the thread is short.
        await to_completion(loop.run_in_executor(self._pumps, pump), on_cancel=abort)


class StreamReader:
    """The store's async GET on the event loop; the sink is written from the I/O pool."""

    def __init__(self, io: Executor, chunk_size: int) -> None:
        self._io = io
        self._chunk_size = chunk_size

    def close(self) -> None:
        pass

    async def read(self, request: GetRequest, sink: Sink) -> None:
        span = request.byte_range
        async with request.store.open_get(request.location, span, request.etag) as (facts, body):
            start = span.start if span else 0
            await pump_body(body.read, sink, facts, start, self._io, self._chunk_size)


class FallbackReader:
    """`primary`, and `fallback` for a request the primary is refused (a SourceError, which
    readers raise only from the status line, before any byte)."""

    def __init__(self, primary: Reader, fallback: Reader) -> None:
        self._primary = primary
        self._fallback = fallback

    def close(self) -> None:
        self._primary.close()
        self._fallback.close()

    async def read(self, request: GetRequest, sink: Sink) -> None:
        try:
            await self._primary.read(request, sink)
        except SourceError as refused:
            # The store's own client follows what a plain request cannot, such as S3's
            # redirect to the bucket's region, and otherwise reports the refusal in its words.
            log.info("threaded GET refused (%s); reading through the store's client", refused)
            await self._fallback.read(request, sink)


def reader_for(settings: S3Settings, store: ObjectStore[Any], io: Executor) -> Reader:
    """Threads first (falling back to the store's client) where the store offers plain
    requests and `threaded_reads` is on (an HTTP proxy in the environment turns it off);
    the store's client otherwise."""
    stream = StreamReader(io, settings.chunk_size)
    if settings.threaded_reads and store.capabilities.plain_http:
        return FallbackReader(ThreadedReader(settings), stream)
    return stream


class ReaderByStore:
    """Each request to the reader of its store, made the first time the store is read."""

    def __init__(self, make: Callable[[ObjectStore[Any]], Reader]) -> None:
        self._make = make
        self._readers: dict[int, tuple[ObjectStore[Any], Reader]] = {}

    def close(self) -> None:
        for _, reader in self._readers.values():
            reader.close()

    async def read(self, request: GetRequest, sink: Sink) -> None:
        found = self._readers.get(id(request.store))
        if found is None:
            found = (request.store, self._make(request.store))  # the store kept: ids stay unique
            self._readers[id(request.store)] = found
        await found[1].read(request, sink)


async def pump_body(
    read: Callable[[int], Awaitable[bytes]],
    sink: Sink,
    facts: ObjectFacts | None,
    offset: int,
    io: Executor,
    chunk_size: int,
) -> None:
    """A body read on the event loop into `sink`: exactly the bytes `sink.begin` expects, or
    RetryableError. Blocks of about `chunk_size` go to the I/O pool, one job each (the
    first also begins the sink, the last ends it)."""
    loop = asyncio.get_running_loop()
    body = _Body(sink, facts, offset)
    pending: list[Buffer] = []
    pending_size = 0
    while True:
        data = await read(chunk_size - pending_size)
        if data:
            pending.append(data)
            pending_size += len(data)
        last = not data
        if last or pending_size >= chunk_size or len(pending) >= _MAX_PIECES:
            block, pending, pending_size = pending, [], 0
            # Waited for even when cancelled: the caller closes the file next, and a write
            # still running could land in whatever file reuses its descriptor.
            await to_completion(loop.run_in_executor(io, body.take, block, last))
        if last:
            return


class _Body:
    """A body's bytes as they reach the sink (in the I/O pool, one block at a time)."""

    def __init__(self, sink: Sink, facts: ObjectFacts | None, offset: int) -> None:
        self._sink = sink
        self._facts = facts
        self._offset = offset
        self._expected: int | None = None
        self._written = 0

    def take(self, pieces: list[Buffer], last: bool) -> None:
        if self._expected is None:
            self._expected = self._sink.begin(self._facts)
        size = sum(len(piece) for piece in pieces)
        if self._written + size > self._expected:
            # Checked before the write: a range's excess would land on its neighbour's bytes.
            raise RetryableError(
                f"body longer than the {self._expected} bytes asked for", "bad_response"
            )
        if pieces:
            self._sink.write(pieces, self._offset + self._written)
            self._written += size
        if last:
            if self._written != self._expected:
                raise RetryableError(
                    f"short body: {self._written} of {self._expected} bytes", "bad_response"
                )
            self._sink.end()
