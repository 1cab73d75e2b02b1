"""Artifacts read through an MLflow server that proxies them (`mlflow-artifacts:/` URIs where
the server's artifact destination is not known): whole files, nothing but their size to check."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlparse

import aiohttp

from syncd.core.manifest import RemoteObject
from syncd.core.plan import ObjectFacts, Range
from syncd.errors import RetryableError, SourceError
from syncd.remote.failure import host_of, status_error
from syncd.remote.http_get import failed
from syncd.remote.small import SMALL_FILE_LIMIT, too_large
from syncd.remote.store import Capabilities, PlainGet
from syncd.settings import MlflowSettings, Settings

__all__ = ["MlflowArtifactProxy", "ProxiedLocation", "open_store", "parse"]

_API = "/api/2.0/mlflow-artifacts/artifacts"
_MAX_FOLDERS = 10_000
_MAX_DEPTH = 64


@dataclass(frozen=True)
class ProxiedLocation:
    """A path under the MLflow server's artifact root, read through the server."""

    path: str

    @property
    def uri(self) -> str:
        return f"mlflow-artifacts:/{self.path}"

    def child(self, relative: str) -> ProxiedLocation:
        return ProxiedLocation(f"{self.path}/{relative.strip('/')}".strip("/"))


def parse(uri: str) -> ProxiedLocation:
    return ProxiedLocation(urlparse(uri).path.strip("/"))


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[MlflowArtifactProxy]:
    if not (settings.mlflow.tracking_uri or "").startswith(("http://", "https://")):
        raise SourceError(
            "mlflow-artifacts:/ URIs are proxied by the MLflow server: set an http(s) "
            "MLFLOW_TRACKING_URI, or s3.artifacts_destination to read them from the store"
        )
    async with MlflowArtifactProxy.open(settings.mlflow) as proxy:
        yield proxy


def auth_headers(settings: MlflowSettings) -> dict[str, str]:
    """The headers MLflow's own client would send for these credentials."""
    if settings.token:
        return {"Authorization": f"Bearer {settings.token}"}
    if settings.username and settings.password:
        pair = f"{settings.username}:{settings.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}


class MlflowArtifactProxy:
    """List and stream artifacts through `/api/2.0/mlflow-artifacts/artifacts`."""

    capabilities = Capabilities(
        ranged=False,
        unverified="read through the MLflow server, which offers no checksum: size checked, "
        "MD5 recorded for later verification",
    )

    def __init__(self, session: aiohttp.ClientSession, tracking_uri: str) -> None:
        self._session = session
        self._base = tracking_uri.rstrip("/")

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: MlflowSettings) -> AsyncIterator[MlflowArtifactProxy]:
        if not settings.tracking_uri or not settings.tracking_uri.startswith(
            ("http://", "https://")
        ):
            raise SourceError(
                "mlflow-artifacts:/ sources need an http(s) MLFLOW_TRACKING_URI "
                "or s3.artifacts_destination"
            )
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=120)
        async with aiohttp.ClientSession(
            headers=auth_headers(settings), timeout=timeout, raise_for_status=False
        ) as session:
            yield cls(session, settings.tracking_uri)

    async def list_objects(self, location: ProxiedLocation) -> list[RemoteObject]:
        """Every file below the location, relative to it (walks folders breadth first)."""
        path = location.path
        found: list[RemoteObject] = []
        pending = [""]
        listed = 0
        while pending:
            relative = pending.pop()
            listed += 1
            # A server (or a run) that answers with folders for ever must not keep syncd
            # listing for ever: a model has a few folders, not tens of thousands.
            if listed > _MAX_FOLDERS or relative.count("/") >= _MAX_DEPTH:
                raise SourceError(
                    f"{location.uri}: more than {_MAX_FOLDERS} folders or {_MAX_DEPTH} levels "
                    "deep via MLflow; refusing to list further"
                )
            listing = await self._list_one(f"{path}/{relative}".rstrip("/"))
            for item in listing:
                child = f"{relative}/{item['path']}".lstrip("/")
                if item.get("is_dir"):
                    pending.append(child)
                else:
                    found.append(RemoteObject(child, int(item.get("file_size", 0))))
        return found

    async def _list_one(self, path: str) -> list[dict[str, Any]]:
        try:
            async with self._session.get(self._base + _API, params={"path": path}) as response:
                if response.status != 200:
                    raise status_error(response.status, "", f"listing {path} via MLflow")
                document = await response.json()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._failed(f"listing {path}", exc) from exc
        files: list[dict[str, Any]] = document.get("files", [])
        return files

    async def read(self, location: ProxiedLocation) -> bytes | None:
        """A small artifact's bytes, or None when it does not exist."""
        path = location.path
        try:
            async with self._session.get(self._url(path)) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise status_error(response.status, "", f"reading {path} via MLflow")
                if (response.content_length or 0) > SMALL_FILE_LIMIT:
                    raise too_large(location.uri, response.content_length)
                data = bytearray()
                while chunk := await response.content.read(SMALL_FILE_LIMIT + 1 - len(data)):
                    data += chunk
                    if len(data) > SMALL_FILE_LIMIT:
                        raise too_large(location.uri)
                return bytes(data)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._failed(f"reading {path}", exc) from exc

    @asynccontextmanager
    async def open_get(
        self, location: ProxiedLocation, byte_range: Range | None, pin: str | None
    ) -> AsyncIterator[tuple[ObjectFacts | None, aiohttp.StreamReader]]:
        """The artifact's body as a stream (whole: the proxy serves no ranges)."""
        assert byte_range is None
        path = location.path
        try:
            async with self._session.get(self._url(path)) as response:
                if response.status != 200:
                    raise status_error(response.status, "", f"GET {path} via MLflow")
                yield None, response.content
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._failed(f"GET {path}", exc) from exc

    async def facts(self, location: ProxiedLocation) -> ObjectFacts:
        raise SourceError(f"{location.uri}: the MLflow proxy states no object facts")

    async def plain_get(
        self, location: ProxiedLocation, byte_range: Range | None, pin: str | None
    ) -> PlainGet:
        raise SourceError(f"{location.uri}: read through the MLflow proxy's own client")

    def facts_from_headers(self, headers: Mapping[str, str], pin: str | None) -> ObjectFacts:
        return ObjectFacts(size=int(headers.get("content-length", 0)), etag="")

    def _failed(self, what: str, exc: BaseException) -> RetryableError:
        """A transport failure in plain words, the server named by its host only (a tracking
        URI may carry a user and password)."""
        return failed(f"{what} via MLflow at {host_of(self._base)}", exc)

    def _url(self, path: str) -> str:
        return f"{self._base}{_API}/{quote(path)}"
