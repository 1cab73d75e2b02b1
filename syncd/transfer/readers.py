"""Readers: one GET (ranged, or a whole object with its checksum headers) into a sink.

Every way syncd reads bytes is one class behind `Reader.read(request, sink)`:

- `ThreadedReader`: pump threads on presigned URLs (`blocking_get`), the fast path;
- `StreamReader`: aiobotocore on the event loop, for what presigned URLs cannot follow;
- `ProxyReader`: the MLflow server's artifact proxy (whole files only);
- `FallbackReader`: one reader, then another where the first is refused before any byte;
- `ReaderByLocation`: S3 locations to one reader, proxied ones to another.

A reader neither retries, nor counts requests in flight, nor keeps progress: the engine's
`_fetch` does that once for all of them. A reader must not return (or raise) while a thread
of its own may still call the sink: the engine closes the file next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from syncd.core.completion import to_completion
from syncd.core.plan import ObjectFacts, Range
from syncd.errors import RetryableError, SourceError
from syncd.local.files import Buffer
from syncd.remote.mlflow_proxy import MlflowArtifactProxy, ProxiedLocation
from syncd.remote.s3 import S3Location, facts_from_http_headers
from syncd.settings import S3Settings
from syncd.transfer.blocking_get import Abort, BlockingRangeReader
from syncd.transfer.sinks import Sink

__all__ = [
    "FallbackReader",
    "GetRequest",
    "ProxyReader",
    "Reader",
    "ReaderByLocation",
    "S3Reading",
    "StreamReader",
    "ThreadedReader",
    "default_reader",
]

log = logging.getLogger(__name__)

READ_TIMEOUT = 60.0  # seconds without a byte before a request is given up (and retried)
_URL_RENEW_AFTER = 900.0  # presigned URLs live an hour; renew after a quarter of it
_MAX_PIECES = 512  # a block is written before it holds more received chunks than this


@dataclass(frozen=True)
class GetRequest:
    """One GET: a range of an object pinned to its ETag, or (no range) the whole object,
    pinned when the listing gave an ETag; `size` is the listed size."""

    location: S3Location | ProxiedLocation
    size: int
    byte_range: Range | None = None
    etag: str | None = None

    def describe(self) -> str:
        where = f" {self.byte_range.header}" if self.byte_range else ""
        via = " via MLflow" if isinstance(self.location, ProxiedLocation) else ""
        return f"GET {self.location.uri}{where}{via}"


class Reader(Protocol):
    async def read(self, request: GetRequest, sink: Sink) -> None: ...

    def close(self) -> None: ...


class S3Reading(Protocol):
    """What S3 readers and the engine ask of an object store (S3ObjectStore; the fake)."""

    async def head(self, location: S3Location, part_number: int | None = None) -> ObjectFacts: ...

    def get(
        self, location: S3Location, byte_range: Range | None, etag: str | None
    ) -> AbstractAsyncContextManager[tuple[ObjectFacts | None, Any]]: ...

    async def presign_get(self, location: S3Location, expires: int, checksums: bool) -> str: ...


class ThreadedReader:
    """Pump threads, one request each for a whole range, on presigned URLs."""

    def __init__(self, store: S3Reading, settings: S3Settings) -> None:
        self._store = store
        self._blocking = BlockingRangeReader(
            settings.chunk_size, READ_TIMEOUT, settings.ca_bundle, settings.verify_ssl
        )
        # As many threads as requests may be in flight: each holds one for its whole range.
        self._pumps = ThreadPoolExecutor(
            max_workers=settings.max_concurrency, thread_name_prefix="syncd-get"
        )
        self._urls: dict[tuple[str, bool], tuple[str, float]] = {}

    def close(self) -> None:
        self._pumps.shutdown(wait=False, cancel_futures=True)

    async def read(self, request: GetRequest, sink: Sink) -> None:
        location = request.location
        assert isinstance(location, S3Location)
        whole = request.byte_range is None
        url = await self._presigned(location, checksums=whole)
        abort = Abort()

        def write(data: memoryview, offset: int) -> None:
            sink.write((data,), offset)

        def pump() -> None:
            if request.byte_range is None:

                def start(headers: dict[str, str]) -> Callable[[memoryview, int], None]:
                    sink.begin(facts_from_http_headers(headers))
                    return write

                self._blocking.read_object(url, request.etag, start, abort)
            else:
                assert request.etag is not None
                sink.begin(None)
                self._blocking.read_range(url, request.byte_range, request.etag, write, abort)
            sink.end()

        loop = asyncio.get_running_loop()
        # Cancelled: `abort` shuts the socket down, so the wait for the thread is short.
        await to_completion(loop.run_in_executor(self._pumps, pump), on_cancel=abort)

    async def _presigned(self, location: S3Location, checksums: bool) -> str:
        """A presigned URL per object, renewed well before it expires (valid 1 h).

        `checksums`: signed to ask for the object's checksum headers (whole GETs).
        """
        now = time.monotonic()
        key = (location.uri, checksums)
        cached = self._urls.get(key)
        if cached is not None and now - cached[1] < _URL_RENEW_AFTER:
            return cached[0]
        url = await self._store.presign_get(location, expires=3600, checksums=checksums)
        if len(self._urls) >= 4096:
            # Bounded: thousands of small objects each sign once; dropping a URL only costs
            # signing it again (~0.08 ms, `python -m tests.bench.micro`).
            self._urls.clear()
        self._urls[key] = (url, now)
        return url


class StreamReader:
    """aiobotocore on the event loop; the sink is written from the I/O pool."""

    def __init__(self, store: S3Reading, io: Executor, chunk_size: int) -> None:
        self._store = store
        self._io = io
        self._chunk_size = chunk_size

    def close(self) -> None:
        pass

    async def read(self, request: GetRequest, sink: Sink) -> None:
        location = request.location
        assert isinstance(location, S3Location)
        span = request.byte_range
        async with self._store.get(location, span, request.etag) as (facts, body):
            start = span.start if span else 0
            await pump_body(body.read, sink, facts, start, self._io, self._chunk_size)


class ProxyReader:
    """Whole artifacts streamed through the MLflow server (which states no checksum)."""

    def __init__(self, proxy: MlflowArtifactProxy, io: Executor, chunk_size: int) -> None:
        self._proxy = proxy
        self._io = io
        self._chunk_size = chunk_size

    def close(self) -> None:
        pass

    async def read(self, request: GetRequest, sink: Sink) -> None:
        location = request.location
        assert isinstance(location, ProxiedLocation)
        assert request.byte_range is None
        async with self._proxy.get(location.path) as stream:
            await pump_body(stream.read, sink, None, 0, self._io, self._chunk_size)


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
            # aiobotocore follows what a presigned URL cannot, such as a redirect to the
            # bucket's region, and otherwise reports the refusal in its own words.
            log.info("threaded GET refused (%s); reading through aiobotocore", refused)
            await self._fallback.read(request, sink)


class ReaderByLocation:
    """S3 locations to `s3`, locations the MLflow server proxies to `proxied`."""

    def __init__(self, s3: Reader, proxied: Reader | None) -> None:
        self._s3 = s3
        self._proxied = proxied

    def close(self) -> None:
        self._s3.close()
        if self._proxied is not None:
            self._proxied.close()

    async def read(self, request: GetRequest, sink: Sink) -> None:
        if isinstance(request.location, S3Location):
            return await self._s3.read(request, sink)
        if self._proxied is None:
            raise SourceError(
                f"{request.location.uri} is proxied by the MLflow server: set an http(s) "
                "MLFLOW_TRACKING_URI, or s3.artifacts_destination to read it from S3"
            )
        return await self._proxied.read(request, sink)


def default_reader(
    settings: S3Settings, store: S3Reading, proxy: MlflowArtifactProxy | None, io: Executor
) -> Reader:
    """Threads first (falling back to aiobotocore) unless `threaded_reads` is off (an HTTP
    proxy in the environment turns it off); the MLflow proxy for proxied locations."""
    stream = StreamReader(store, io, settings.chunk_size)
    s3: Reader = (
        FallbackReader(ThreadedReader(store, settings), stream)
        if settings.threaded_reads
        else stream
    )
    proxied = ProxyReader(proxy, io, settings.chunk_size) if proxy is not None else None
    return ReaderByLocation(s3, proxied)


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
