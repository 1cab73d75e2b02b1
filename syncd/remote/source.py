"""Where a run's artifacts are listed and read from: whichever store its URI names, opened on
first use (syncd.remote.stores), with `mlflow-artifacts:/` URIs mapped into the server's
artifact destination where it is known and read through the MLflow server otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlparse

from syncd.core.manifest import RemoteObject
from syncd.errors import SourceError
from syncd.remote.retry import RetryObserver, RetryPolicy
from syncd.remote.store import Location, ObjectStore
from syncd.remote.stores import SCHEMES, module_for, scheme_of
from syncd.settings import Settings

__all__ = ["Location", "ObjectStore", "Sources", "locate"]


def locate(uri: str, artifacts_destination: str | None) -> Location:
    """The location an artifact URI names; proxy URIs map into the artifact destination
    (any store's URI) when it is known."""
    uri = uri.rstrip("/")
    if uri.startswith("mlflow-artifacts:") and artifacts_destination:
        path = urlparse(uri).path.strip("/")
        return locate(f"{artifacts_destination.rstrip('/')}/{path}", None)
    return module_for(uri).parse(uri)


class Sources:
    """Lists and reads from whichever store a location belongs to; each store is opened the
    first time a location of its kind is met and closed with the Sources."""

    def __init__(
        self,
        settings: Settings | None,
        retry: RetryPolicy,
        opened: Mapping[str, ObjectStore[Any]] | None = None,
    ) -> None:
        """`opened`: stores already open, by module (`syncd.remote.s3`, ...), or by "*" for
        one store that reads every location (tests)."""
        self._settings = settings
        self._retry = retry
        self._stores: dict[str, ObjectStore[Any]] = dict(opened or {})
        self._stack = AsyncExitStack()
        self._opening = asyncio.Lock()
        destination = settings.s3.artifacts_destination if settings else None
        self._artifacts_destination = destination

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, observer: RetryObserver | None = None
    ) -> AsyncIterator[Sources]:
        sources = cls(settings, RetryPolicy(settings.s3.max_attempts, observer))
        async with sources._stack:
            yield sources

    def locate(self, uri: str) -> Location:
        return locate(uri, self._artifacts_destination)

    async def store_for(self, location: Location) -> ObjectStore[Any]:
        """The store that reads `location`, opened now if it is the first of its kind."""
        if "*" in self._stores:
            return self._stores["*"]
        name = SCHEMES[scheme_of(location.uri)]
        store = self._stores.get(name)
        if store is not None:
            return store
        async with self._opening:
            if name not in self._stores:
                if self._settings is None:
                    raise SourceError(f"no store is open for {location.uri}")
                opener = module_for(location.uri).open_store(self._settings)
                self._stores[name] = await self._stack.enter_async_context(opener)
            return self._stores[name]

    async def list_objects(self, location: Location) -> list[RemoteObject]:
        """Every object under the location (retried on transient errors)."""
        store = await self.store_for(location)
        return await self._retry.run(
            f"listing {location.uri}", lambda: store.list_objects(location)
        )

    async def read(self, location: Location) -> bytes | None:
        """A small file's bytes, or None when it is absent (retried on transient errors)."""
        store = await self.store_for(location)
        return await self._retry.run(f"reading {location.uri}", lambda: store.read(location))

    async def read_uri(self, uri: str) -> bytes | None:
        """A small artifact named by its URI (`model_context.json`), or None when absent."""
        return await self.read(self.locate(uri))
