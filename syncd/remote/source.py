"""Where a run's artifacts are listed and read from: S3 directly, S3 mapped from a proxy URI,
or the proxy. (Downloads go through the transfer engine, over the same stores.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from syncd.core.manifest import RemoteObject
from syncd.errors import SourceError, quoted
from syncd.remote.mlflow_proxy import MlflowArtifactProxy, ProxiedLocation
from syncd.remote.retry import RetryObserver, RetryPolicy
from syncd.remote.s3 import S3Location, S3ObjectStore, parse_s3_uri
from syncd.settings import Settings

__all__ = ["Location", "ObjectStore", "ProxiedLocation", "Sources", "locate"]

L = TypeVar("L", contravariant=True)


Location = S3Location | ProxiedLocation


class ObjectStore(Protocol[L]):
    """What every artifact store answers, whatever its kind of location."""

    async def list_objects(self, location: L) -> list[RemoteObject]: ...

    async def read(self, location: L) -> bytes | None: ...


def locate(uri: str, artifacts_destination: str | None) -> Location:
    """The location an artifact URI names; proxy URIs map into S3 when the destination is known."""
    uri = uri.rstrip("/")
    if uri.startswith("s3://"):
        return parse_s3_uri(uri)
    if uri.startswith("mlflow-artifacts:"):
        path = urlparse(uri).path.strip("/")
        if artifacts_destination:
            return parse_s3_uri(f"{artifacts_destination.rstrip('/')}/{path}")
        return ProxiedLocation(path)
    scheme = uri.split(":", 1)[0] if ":" in uri else "a local path"
    raise SourceError(
        f"artifact URI {quoted(uri)} uses {scheme}; syncd reads s3:// and mlflow-artifacts:/"
    )


class Sources:
    """Lists and reads from whichever kind of location a URI names."""

    def __init__(
        self,
        s3: S3ObjectStore,
        proxy: MlflowArtifactProxy | None,
        artifacts_destination: str | None,
        retry: RetryPolicy,
    ) -> None:
        self._s3 = s3
        self._proxy = proxy
        self._artifacts_destination = artifacts_destination
        self._retry = retry

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, observer: RetryObserver | None = None
    ) -> AsyncIterator[Sources]:
        async with AsyncExitStack() as stack:
            s3 = await stack.enter_async_context(S3ObjectStore.open(settings.s3))
            proxy = None
            uri = settings.mlflow.tracking_uri or ""
            if uri.startswith(("http://", "https://")):
                proxy = await stack.enter_async_context(MlflowArtifactProxy.open(settings.mlflow))
            retry = RetryPolicy(settings.s3.max_attempts, observer)
            yield cls(s3, proxy, settings.s3.artifacts_destination, retry)

    @property
    def s3(self) -> S3ObjectStore:
        return self._s3

    @property
    def proxy(self) -> MlflowArtifactProxy | None:
        return self._proxy

    def locate(self, uri: str) -> Location:
        return locate(uri, self._artifacts_destination)

    def _require_proxy(self, location: ProxiedLocation) -> MlflowArtifactProxy:
        if self._proxy is None:
            raise SourceError(
                f"{location.uri} is proxied by the MLflow server: set an http(s) "
                "MLFLOW_TRACKING_URI, or s3.artifacts_destination to read it from S3"
            )
        return self._proxy

    def _store(self, location: Location) -> ObjectStore[Any]:
        if isinstance(location, S3Location):
            return self._s3
        return self._require_proxy(location)

    async def list_objects(self, location: Location) -> list[RemoteObject]:
        """Every object under the location (retried on transient errors)."""
        store = self._store(location)
        return await self._retry.run(
            f"listing {location.uri}", lambda: store.list_objects(location)
        )

    async def read(self, location: Location) -> bytes | None:
        """A small file's bytes, or None when it is absent (retried on transient errors)."""
        store = self._store(location)
        return await self._retry.run(f"reading {location.uri}", lambda: store.read(location))

    async def read_uri(self, uri: str) -> bytes | None:
        """A small artifact named by its URI (`model_context.json`), or None when absent."""
        return await self.read(self.locate(uri))
