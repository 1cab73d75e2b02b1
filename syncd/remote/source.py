"""Where a run's artifacts are read from: S3 directly, S3 mapped from a proxy URI, or the proxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from syncd.core.folder_plan import Patch
from syncd.core.manifest import FileEntry, RemoteObject
from syncd.errors import SourceError
from syncd.remote.mlflow_proxy import MlflowArtifactProxy
from syncd.remote.s3 import RetryableError, S3Location, S3ObjectStore, parse_s3_uri
from syncd.settings import Settings
from syncd.transfer.engine import Downloader, Progress, backoff_delay
from syncd.transfer.resume import ResumeState

__all__ = ["Location", "ProxiedLocation", "Sources", "locate"]

T = TypeVar("T")


async def _retrying(call: Callable[[], Awaitable[T]], attempts: int = 4) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except RetryableError:
            if attempt == attempts:
                raise
            await asyncio.sleep(backoff_delay(attempt))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ProxiedLocation:
    """A path under the MLflow server's artifact root, read through the server."""

    path: str

    @property
    def uri(self) -> str:
        return f"mlflow-artifacts:/{self.path}"

    def child(self, relative: str) -> ProxiedLocation:
        return ProxiedLocation(f"{self.path}/{relative.strip('/')}".strip("/"))


Location = S3Location | ProxiedLocation


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
        f"artifact URI {uri!r} uses {scheme}; syncd reads s3:// and mlflow-artifacts:/"
    )


class Sources:
    """Lists, reads and downloads from whichever kind of location a URI names."""

    def __init__(
        self,
        s3: S3ObjectStore,
        proxy: MlflowArtifactProxy | None,
        artifacts_destination: str | None,
    ) -> None:
        self._s3 = s3
        self._proxy = proxy
        self._artifacts_destination = artifacts_destination

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[Sources]:
        async with AsyncExitStack() as stack:
            s3 = await stack.enter_async_context(S3ObjectStore.open(settings.s3))
            proxy = None
            uri = settings.mlflow.tracking_uri or ""
            if uri.startswith(("http://", "https://")):
                proxy = await stack.enter_async_context(MlflowArtifactProxy.open(settings.mlflow))
            yield cls(s3, proxy, settings.s3.artifacts_destination)

    def locate(self, uri: str) -> Location:
        return locate(uri, self._artifacts_destination)

    def _require_proxy(self, location: ProxiedLocation) -> MlflowArtifactProxy:
        if self._proxy is None:
            raise SourceError(
                f"{location.uri} is proxied by the MLflow server: set an http(s) "
                "MLFLOW_TRACKING_URI, or s3.artifacts_destination to read it from S3"
            )
        return self._proxy

    async def list_objects(self, location: Location) -> list[RemoteObject]:
        """Every object under the location (retried on transient errors)."""
        if isinstance(location, S3Location):
            s3_location = location
            return await _retrying(lambda: self._s3.list_objects(s3_location))
        proxy, path = self._require_proxy(location), location.path
        return await _retrying(lambda: proxy.list_objects(path))

    async def read(self, location: Location) -> bytes | None:
        """A small file's bytes, or None when it is absent (retried on transient errors)."""
        if isinstance(location, S3Location):
            s3_location = location
            return await _retrying(lambda: self._s3.read(s3_location))
        proxy, path = self._require_proxy(location), location.path
        return await _retrying(lambda: proxy.read(path))

    async def download(
        self,
        downloader: Downloader,
        location: Location,
        obj: RemoteObject,
        dest: Path,
        progress: Progress,
        resume: ResumeState | None = None,
    ) -> FileEntry:
        """One object of the listing into `dest`, verified as well as the source allows."""
        child = location.child(obj.path)
        if isinstance(location, S3Location):
            assert isinstance(child, S3Location)
            return await downloader.download_s3(self._s3, child, obj, dest, progress, resume)
        assert isinstance(child, ProxiedLocation)
        return await downloader.download_proxied(
            self._require_proxy(location), child.path, obj, dest, progress
        )

    async def repair(
        self,
        downloader: Downloader,
        location: Location,
        patch: Patch,
        dest: Path,
        progress: Progress,
    ) -> FileEntry:
        """Fetch a file's damaged ranges again into `dest`, a copy of the published file."""
        child = location.child(patch.entry.path)
        # Only ranged S3 reads record range checksums, so only S3 files are ever patched.
        assert isinstance(child, S3Location)
        return await downloader.repair_s3(self._s3, child, patch.entry, dest, patch.spans, progress)
