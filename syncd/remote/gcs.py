"""Google Cloud Storage: `gs://bucket/prefix`, read over its JSON API.

Requests and answers as Google documents them (cloud.google.com/storage/docs/json_api/v1:
`objects.list` pages of `items` with `name`, `size`, `generation`, `crc32c`, `md5Hash` and a
`nextPageToken`; `objects.get` with `alt=media` for the bytes, `Range` honoured, and
`ifGenerationMatch` answering 412 when the object was replaced; a whole download states
`x-goog-hash: crc32c=...,md5=...` and `x-goog-generation`).

Every object is pinned to its generation and verified by its CRC32C, which GCS keeps for
every object (composite ones included): computed per range and combined, so a damaged range
is repaired alone, as on S3. Credentials: Google's default chain (google-auth:
GOOGLE_APPLICATION_CREDENTIALS, workload identity, the metadata server), or none at all
where STORAGE_EMULATOR_HOST names an emulator, as Google's own clients do.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from syncd.core.checksum import Algorithm
from syncd.core.manifest import RemoteObject
from syncd.core.plan import ObjectFacts, Range
from syncd.errors import SourceError
from syncd.remote.failure import status_error
from syncd.remote.http_get import failed, open_plain_get, read_small, session
from syncd.remote.store import Body, BucketLocation, Capabilities, PlainGet
from syncd.settings import Settings

__all__ = ["GcsLocation", "GcsStore", "download_facts", "open_store", "parse"]

_PUBLIC = "https://storage.googleapis.com"
_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
_TOKEN_MARGIN = 300.0  # seconds before expiry a token is refreshed


@dataclass(frozen=True)
class GcsLocation(BucketLocation):
    """A bucket and an object name prefix (no trailing slash)."""

    scheme = "gs"


def parse(uri: str) -> GcsLocation:
    """`gs://bucket/some/prefix/` -> GcsLocation('bucket', 'some/prefix')."""
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not uri.startswith("gs://") or not bucket:
        raise SourceError(f"no bucket in {uri}: write gs://BUCKET/PATH")
    return GcsLocation(bucket, prefix.strip("/"))


def endpoint() -> tuple[str, bool]:
    """The API's base URL, and whether it is an emulator (no credentials sent)."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "").rstrip("/")
    if not host:
        return _PUBLIC, False
    return (host if "://" in host else f"http://{host}"), True


class _Token:
    """A bearer token from Google's default credentials, refreshed before it expires."""

    def __init__(self) -> None:
        self._credentials: Any = None
        self._lock = asyncio.Lock()

    async def header(self) -> dict[str, str]:
        async with self._lock:
            credentials = self._credentials
            if credentials is None or _expiring(credentials):
                self._credentials = credentials = await asyncio.to_thread(_refreshed, credentials)
        return {"Authorization": f"Bearer {credentials.token}"}


def _expiring(credentials: Any) -> bool:
    """No token yet, or one that expires within the margin (google-auth's `expiry` is a
    naive datetime in UTC)."""
    if not getattr(credentials, "token", None):
        return True
    expiry = getattr(credentials, "expiry", None)
    if expiry is None:
        return False
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=UTC)
    return bool(expiry.timestamp() - time.time() < _TOKEN_MARGIN)


def _refreshed(credentials: Any) -> Any:
    try:
        import google.auth
        import google.auth.transport.requests
        from google.auth.exceptions import GoogleAuthError
    except ImportError as exc:
        raise SourceError("gs:// sources need google-auth: pip install 'syncd[gcs]'") from exc
    try:
        if credentials is None:
            credentials, _ = google.auth.default(scopes=[_SCOPE])
        credentials.refresh(google.auth.transport.requests.Request())
    except GoogleAuthError as exc:
        raise SourceError(
            f"no Google credentials for gs:// ({exc}): set GOOGLE_APPLICATION_CREDENTIALS "
            "or run with a workload identity"
        ) from exc
    return credentials


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[GcsStore]:
    base, emulated = endpoint()
    async with session() as client:
        yield GcsStore(client, base, None if emulated else _Token())


class GcsStore:
    """List, state and read GCS objects; bytes through plain requests the threads send."""

    capabilities = Capabilities(ranged=True, plain_http=True)

    def __init__(self, client: aiohttp.ClientSession, base: str, token: _Token | None) -> None:
        self._client = client
        self._base = base
        self._token = token

    async def _auth(self) -> dict[str, str]:
        return await self._token.header() if self._token else {}

    def _object_url(self, location: GcsLocation, media: bool, **query: str) -> str:
        name = quote(location.prefix, safe="")
        path = (
            f"/download/storage/v1/b/{location.bucket}/o/{name}"
            if media
            else (f"/storage/v1/b/{location.bucket}/o/{name}")
        )
        params = {"alt": "media", **query} if media else query
        return f"{self._base}{path}" + (f"?{urlencode(params)}" if params else "")

    async def _json(self, url: str, what: str) -> Any:
        try:
            async with self._client.get(url, headers=await self._auth()) as response:
                if response.status != 200:
                    await response.read()
                    raise status_error(response.status, "", what)
                return await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise failed(what, exc) from exc

    async def list_objects(self, location: GcsLocation) -> list[RemoteObject]:
        prefix = location.prefix + "/" if location.prefix else ""
        found: list[RemoteObject] = []
        token = ""
        while True:
            query = {"prefix": prefix, "fields": "items(name,size,generation),nextPageToken"}
            if token:
                query["pageToken"] = token
            url = f"{self._base}/storage/v1/b/{location.bucket}/o?{urlencode(query)}"
            page = await self._json(url, f"listing {location.uri}")
            for item in page.get("items", []):
                relative = str(item["name"])[len(prefix) :]
                if relative and not relative.endswith("/"):
                    found.append(RemoteObject(relative, int(item["size"]), str(item["generation"])))
            token = page.get("nextPageToken") or ""
            if not token:
                return found

    async def read(self, location: GcsLocation) -> bytes | None:
        get = PlainGet(self._object_url(location, media=True), await self._auth())
        return await read_small(self._client, get, location.uri)

    async def facts(self, location: GcsLocation) -> ObjectFacts:
        url = self._object_url(location, media=False)
        item = await self._json(url, f"HEAD {location.uri}")
        checksums = _checksums(item.get("crc32c"), item.get("md5Hash"))
        return ObjectFacts(
            size=int(item["size"]),
            etag=str(item["generation"]),
            checksums=checksums,
            checksum_type="FULL_OBJECT",
        )

    async def plain_get(
        self, location: GcsLocation, byte_range: Range | None, pin: str | None
    ) -> PlainGet:
        # Pinned by generation: a replaced object answers 412, never a splice of two.
        query = {"ifGenerationMatch": pin} if pin else {}
        url = self._object_url(location, media=True, **query)
        return PlainGet(url, await self._auth(), pin)

    def open_get(
        self, location: GcsLocation, byte_range: Range | None, pin: str | None
    ) -> AbstractAsyncContextManager[tuple[ObjectFacts | None, Body]]:
        return open_plain_get(self._client, self, location, byte_range, pin)

    def facts_from_headers(self, headers: Mapping[str, str], pin: str | None) -> ObjectFacts:
        return download_facts(headers, pin)


def download_facts(headers: Mapping[str, str], pin: str | None) -> ObjectFacts:
    """A download's `x-goog-hash` and `x-goog-generation` (a request pinned by
    `ifGenerationMatch` answers with that generation or not at all)."""
    hashes = dict(
        part.strip().split("=", 1)
        for part in headers.get("x-goog-hash", "").split(",")
        if "=" in part
    )
    return ObjectFacts(
        size=int(headers.get("content-length", 0)),
        etag=headers.get("x-goog-generation") or pin or "",
        checksums=_checksums(hashes.get("crc32c"), hashes.get("md5")),
        checksum_type="FULL_OBJECT",
    )


def _checksums(crc32c: str | None, md5: str | None) -> dict[Algorithm, str]:
    """GCS states CRC32C as S3 does (base64, big-endian); MD5 in base64, recorded as hex."""
    found: dict[Algorithm, str] = {}
    if crc32c and crc32c != "None":
        found[Algorithm.CRC32C] = crc32c
    if md5 and md5 != "None":
        found[Algorithm.MD5] = base64.b64decode(md5).hex()
    return found
