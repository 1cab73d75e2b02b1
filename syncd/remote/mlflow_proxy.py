"""Artifacts read through an MLflow server that proxies them (`mlflow-artifacts:/` URIs)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp

from syncd.core.manifest import RemoteObject
from syncd.errors import SourceError
from syncd.remote.s3 import RetryableError, retry_reason
from syncd.settings import MlflowSettings

__all__ = ["MlflowArtifactProxy"]

_API = "/api/2.0/mlflow-artifacts/artifacts"


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

    async def list_objects(self, path: str) -> list[RemoteObject]:
        """Every file below `path`, relative to it (walks folders breadth first)."""
        found: list[RemoteObject] = []
        pending = [""]
        while pending:
            relative = pending.pop()
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
                if response.status >= 500:
                    raise RetryableError(
                        f"listing {path} via MLflow: HTTP {response.status}", "server_error"
                    )
                if response.status != 200:
                    text = await response.text()
                    raise SourceError(f"listing {path} via MLflow: HTTP {response.status}: {text}")
                document = await response.json()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryableError(
                f"listing {path} via MLflow at {self._base}: {exc}", retry_reason(exc)
            ) from exc
        files: list[dict[str, Any]] = document.get("files", [])
        return files

    async def read(self, path: str) -> bytes | None:
        """A small artifact's bytes, or None when it does not exist."""
        try:
            async with self._session.get(self._url(path)) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise SourceError(f"reading {path} via MLflow: HTTP {response.status}")
                data: bytes = await response.read()
                return data
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryableError(
                f"reading {path} via MLflow at {self._base}: {exc}", retry_reason(exc)
            ) from exc

    @asynccontextmanager
    async def get(self, path: str) -> AsyncIterator[aiohttp.StreamReader]:
        """The artifact's body as a stream."""
        try:
            async with self._session.get(self._url(path)) as response:
                if response.status >= 500:
                    raise RetryableError(
                        f"GET {path} via MLflow: HTTP {response.status}", "server_error"
                    )
                if response.status != 200:
                    raise SourceError(f"GET {path} via MLflow: HTTP {response.status}")
                yield response.content
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryableError(
                f"GET {path} via MLflow at {self._base}: {exc}", retry_reason(exc)
            ) from exc

    def _url(self, path: str) -> str:
        return f"{self._base}{_API}/{quote(path)}"
