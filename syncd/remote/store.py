"""The source interface: what every artifact store answers, whatever its cloud.

A store lists a location, reads a small object, states an object's facts (size, the version
token its reads are pinned to, the checksums it offers, its part layout) and opens reads,
whole or one range, pinned to that token: as an async body (`open_get`) and, where the store
speaks plain HTTP, as a request the engine's pump threads send themselves (`plain_get`).

Each adapter translates its own library's errors into syncd's at its boundary (as httpcore's
`map_exceptions` does), so retry code above it catches syncd's errors only:
`RetryableError` for what another attempt may cure, `ObjectChangedError` when the pinned
version is gone, `SourceMissingError`/`SourceError` for what no retry cures. Which store reads
a URI is one table, `syncd.remote.stores.SCHEMES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self, TypeVar

from syncd.core.manifest import RemoteObject
from syncd.core.plan import ObjectFacts, Range

__all__ = [
    "Body",
    "BucketLocation",
    "Capabilities",
    "Location",
    "ObjectStore",
    "OneStore",
    "PlainGet",
    "StoreLookup",
]

L = TypeVar("L", contravariant=True)


class Location(Protocol):
    """Where objects live in one store: a bucket or container and a prefix (no trailing slash)."""

    @property
    def uri(self) -> str: ...

    def child(self, relative: str) -> Any: ...  # the same kind of location, one level down


@dataclass(frozen=True)
class BucketLocation:
    """A bucket and a key prefix (no trailing slash), in a store whose URIs are
    `SCHEME://BUCKET/KEY` (S3, GCS); each store subclasses it with its `scheme`."""

    bucket: str
    prefix: str
    scheme: ClassVar[str] = ""

    @property
    def uri(self) -> str:
        base = f"{self.scheme}://{self.bucket}"
        return f"{base}/{self.prefix}" if self.prefix else base

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def child(self, relative: str) -> Self:
        return type(self)(self.bucket, self.key(relative.strip("/")))


@dataclass(frozen=True)
class Capabilities:
    """What a store can do beyond listing and reading whole small objects.

    ranged: ranged GETs pinned to the version token, and object facts ahead of a read (a
      store without them, the MLflow artifact proxy, is read whole with nothing to check
      but the size: `unverified` says why);
    plain_http: `plain_get` gives a URL and headers a thread can send (signed, or with a
      bearer token), so bytes skip the event loop.
    """

    ranged: bool = True
    plain_http: bool = False
    unverified: str = ""


@dataclass(frozen=True)
class PlainGet:
    """An HTTP GET a pump thread sends as it is: the URL (signed where the store signs URLs),
    the headers it needs (authorization, the version pin, checksum requests), and the pin it
    carries (named in errors)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    pin: str | None = None


class Body(Protocol):
    """A response body; its read errors arrive as syncd errors."""

    async def read(self, amount: int) -> bytes: ...


class ObjectStore(Protocol[L]):
    """One kind of store, for all its buckets or accounts."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def list_objects(self, location: L) -> list[RemoteObject]:
        """Every object under the location, paths relative to it (folder markers skipped)."""
        ...

    async def read(self, location: L) -> bytes | None:
        """A small object's bytes (syncd.remote.small's limit), or None when it is absent."""
        ...

    async def facts(self, location: L) -> ObjectFacts:
        """The object's facts now (the engine checks they are the object listed)."""
        ...

    def open_get(
        self, location: L, byte_range: Range | None, pin: str | None
    ) -> AbstractAsyncContextManager[tuple[ObjectFacts | None, Body]]:
        """A GET of the whole object (yielding its facts from the response) or of
        `byte_range` (yielding None), pinned to `pin`; the Content-Range checked."""
        ...

    async def plain_get(self, location: L, byte_range: Range | None, pin: str | None) -> PlainGet:
        """The same GET as a plain HTTP request (only where `capabilities.plain_http`)."""
        ...

    def facts_from_headers(self, headers: Mapping[str, str], pin: str | None) -> ObjectFacts:
        """The object's facts from a whole GET's response headers (names in lower case);
        `pin`: the token the GET was pinned to (what a store's answer may leave unsaid)."""
        ...


class StoreLookup(Protocol):
    """Which store reads a location (opened on first use)."""

    async def store_for(self, location: Location) -> ObjectStore[Any]: ...


class OneStore:
    """Every location to one store: a tool or a test with a single store."""

    def __init__(self, store: ObjectStore[Any]) -> None:
        self._store = store

    async def store_for(self, location: Location) -> ObjectStore[Any]:
        return self._store
