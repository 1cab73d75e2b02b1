"""An in-memory `ObjectStore` (syncd.remote.store) that answers as S3ObjectStore does over real
S3, with faults on request.

The seam for engine and syncer tests that need no server process: the Downloader (which
reads it through `open_get`: it offers no plain HTTP) and the Syncer (through `Sources`) run
over it unchanged. Request and response shapes from the Amazon S3 API Reference (HeadObject,
GetObject, ListObjectsV2) as botocore's S3 service model (`botocore/data/s3/2006-03-01/
service-2.json.gz`) states them, and from the clients that write objects (s3transfer's
multipart uploads, as boto3 and MLflow make them): ETags are the MD5 of the bytes for a
single PUT and, for a multipart upload, the MD5 of the concatenated part MD5s plus `-N`;
`HeadObject` with `PartNumber=1` answers the first part's `ContentLength` and `PartsCount`;
a `GetObject` with a `Range` answers `Content-Range: bytes START-END/SIZE`, and with a stale
`If-Match` fails with 412 `PreconditionFailed`; 404 `NoSuchKey`, 429 and 503 as S3 sends
them. Errors arrive already in syncd's words, through the same table the real store uses
(`remote.failure.status_error`), and `facts` adds the part layout as the real store does
(`remote.s3.store.part_layout`).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from syncd.core.checksum import multipart_etag
from syncd.core.manifest import RemoteObject
from syncd.core.plan import ObjectFacts, Range
from syncd.remote.failure import status_error
from syncd.remote.ranges import check_content_range
from syncd.remote.s3 import S3Location
from syncd.remote.s3.store import part_layout
from syncd.remote.store import Capabilities, PlainGet

Fault = Literal["503", "429", "412", "404", "short", "wrong", "long"]


@dataclass
class StoredObject:
    data: bytes
    part_size: int | None = None  # a multipart upload's part size

    @property
    def etag(self) -> str:
        if self.part_size is None:
            return hashlib.md5(self.data, usedforsecurity=False).hexdigest()
        parts = [
            hashlib.md5(self.data[i : i + self.part_size], usedforsecurity=False).digest()
            for i in range(0, len(self.data), self.part_size)
        ]
        return multipart_etag(parts)


@dataclass
class FakeObjectStore:
    """bucket/key -> object; `faults[key]` is a queue of what the next GETs of it do."""

    objects: dict[str, StoredObject] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    gets: list[tuple[str, str | None]] = field(default_factory=list)  # (key, Range header)
    capabilities: Capabilities = field(default_factory=lambda: Capabilities(ranged=True))

    def put(self, bucket: str, key: str, data: bytes, part_size: int | None = None) -> None:
        self.objects[f"{bucket}/{key}"] = StoredObject(data, part_size)

    def fail(self, key: str, *faults: Fault) -> None:
        """The next GETs of any object whose key ends with `key` do these, in order."""
        self.faults.setdefault(key, []).extend(faults)

    def _fault(self, name: str) -> Fault | None:
        for suffix, queued in self.faults.items():
            if name.endswith(suffix) and queued:
                return queued.pop(0)
        return None

    def _object(self, location: S3Location, what: str) -> StoredObject:
        found = self.objects.get(f"{location.bucket}/{location.prefix}")
        if found is None:
            raise status_error(404, "NoSuchKey", f"{what} {location.uri}")
        return found

    async def list_objects(self, location: S3Location) -> list[RemoteObject]:
        base = f"{location.bucket}/{location.prefix}".rstrip("/") + "/"
        return [
            RemoteObject(name[len(base) :], len(obj.data), obj.etag)
            for name, obj in sorted(self.objects.items())
            if name.startswith(base)
        ]

    async def read(self, location: S3Location) -> bytes | None:
        found = self.objects.get(f"{location.bucket}/{location.prefix}")
        return None if found is None else found.data

    async def head(self, location: S3Location, part_number: int | None = None) -> ObjectFacts:
        obj = self._object(location, "HEAD")
        if part_number is not None and obj.part_size is not None:
            count = -(-len(obj.data) // obj.part_size)
            return ObjectFacts(
                size=min(obj.part_size, len(obj.data)), etag=obj.etag, parts_count=count
            )
        return ObjectFacts(size=len(obj.data), etag=obj.etag)

    async def facts(self, location: S3Location) -> ObjectFacts:
        return await part_layout(self.head, location, await self.head(location))

    async def plain_get(
        self, location: S3Location, byte_range: Range | None, pin: str | None
    ) -> PlainGet:
        raise AssertionError("the fake store offers no plain HTTP: it is read through open_get")

    def facts_from_headers(self, headers: Mapping[str, str], pin: str | None) -> ObjectFacts:
        raise AssertionError("the fake store answers open_get with facts")

    @asynccontextmanager
    async def open_get(
        self, location: S3Location, byte_range: Range | None, etag: str | None
    ) -> AsyncIterator[tuple[ObjectFacts | None, Any]]:
        name = f"{location.bucket}/{location.prefix}"
        self.gets.append((location.prefix, byte_range.header if byte_range else None))
        obj = self._object(location, "GET")
        fault = self._fault(name)
        if fault in ("503", "429", "404"):
            raise status_error(int(fault), "", f"GET {location.uri}")
        if fault == "412" or (etag is not None and etag != obj.etag):
            raise status_error(412, "PreconditionFailed", f"GET {location.uri}")
        start, end = (byte_range.start, byte_range.end) if byte_range else (0, len(obj.data))
        data = obj.data[start:end]
        if fault == "short":
            data = data[: len(data) // 2]
        elif fault == "wrong":
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0xFF
            data = bytes(flipped)
        elif fault == "long":
            data += b"extra"
        if byte_range is not None:
            check_content_range(
                location.uri, f"bytes {start}-{end - 1}/{len(obj.data)}", end - start, byte_range
            )
            yield None, _Body(data)
        else:
            yield ObjectFacts(size=len(obj.data), etag=obj.etag), _Body(data)


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._position = 0

    async def read(self, amount: int) -> bytes:
        chunk = bytes(self._data[self._position : self._position + amount])
        self._position += len(chunk)
        return chunk
