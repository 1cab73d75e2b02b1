"""A store's `PlainGet` sent on the event loop through aiohttp: the `open_get` of the stores
whose reads are plain HTTP (GCS, Azure Blob), the same request the pump threads send, with
the same answers turned into the same syncd errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from syncd.core.plan import ObjectFacts, Range
from syncd.errors import RetryableError
from syncd.remote.failure import describe_failure, error_code, status_error
from syncd.remote.ranges import check_content_range
from syncd.remote.retry import retry_reason
from syncd.remote.small import SMALL_FILE_LIMIT, too_large
from syncd.remote.store import Body, Location, ObjectStore, PlainGet

__all__ = ["failed", "open_http_get", "open_plain_get", "read_small", "session"]


def session() -> aiohttp.ClientSession:
    """A pooled session for a store's control calls and event-loop reads."""
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
    return aiohttp.ClientSession(timeout=timeout, raise_for_status=False)


def failed(what: str, exc: BaseException) -> RetryableError:
    """A transport failure in plain words, retried."""
    return RetryableError(f"{what}: {describe_failure(exc)}", retry_reason(exc))


@asynccontextmanager
async def open_http_get(
    client: aiohttp.ClientSession,
    get: PlainGet,
    byte_range: Range | None,
    uri: str,
    facts_from_headers: Callable[[Mapping[str, str], str | None], ObjectFacts],
) -> AsyncIterator[tuple[ObjectFacts | None, _Body]]:
    """`get` (ranged when `byte_range`), its status and Content-Range checked; yields the
    object's facts (whole GETs) and the body."""
    headers = dict(get.headers)
    if byte_range is not None:
        headers["Range"] = byte_range.header
    try:
        async with client.get(get.url, headers=headers) as response:
            if response.status not in (200, 206):
                body = await response.read()
                raise status_error(response.status, error_code(body), f"GET {uri}", get.pin or "")
            if byte_range is not None:
                length = response.content_length if response.content_length is not None else -1
                check_content_range(uri, response.headers.get("Content-Range"), length, byte_range)
                yield None, _Body(response.content, uri)
            else:
                lowered = {name.lower(): value for name, value in response.headers.items()}
                yield facts_from_headers(lowered, get.pin), _Body(response.content, uri)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise failed(f"GET {uri}", exc) from exc


@asynccontextmanager
async def open_plain_get(
    client: aiohttp.ClientSession,
    store: ObjectStore[Any],
    location: Location,
    byte_range: Range | None,
    pin: str | None,
) -> AsyncIterator[tuple[ObjectFacts | None, Body]]:
    """A store's `open_get` made of its `plain_get`: the pump threads' request, sent here."""
    get = await store.plain_get(location, byte_range, pin)
    opened = open_http_get(client, get, byte_range, location.uri, store.facts_from_headers)
    async with opened as (facts, body):
        yield facts, body


async def read_small(client: aiohttp.ClientSession, get: PlainGet, uri: str) -> bytes | None:
    """A small object's bytes (at most SMALL_FILE_LIMIT), or None when it is absent."""
    try:
        async with client.get(get.url, headers=dict(get.headers)) as response:
            if response.status == 404:
                return None
            if response.status != 200:
                body = await response.read()
                raise status_error(response.status, error_code(body), f"reading {uri}")
            if (response.content_length or 0) > SMALL_FILE_LIMIT:
                raise too_large(uri, response.content_length)
            data = bytearray()
            while chunk := await response.content.read(SMALL_FILE_LIMIT + 1 - len(data)):
                data += chunk
                if len(data) > SMALL_FILE_LIMIT:
                    raise too_large(uri)
            return bytes(data)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise failed(f"reading {uri}", exc) from exc


class _Body:
    """A response body whose read errors arrive as syncd errors."""

    def __init__(self, content: aiohttp.StreamReader, uri: str) -> None:
        self._content = content
        self._uri = uri

    async def read(self, amount: int) -> bytes:
        try:
            return await self._content.read(amount)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise failed(f"reading GET {self._uri}", exc) from exc
