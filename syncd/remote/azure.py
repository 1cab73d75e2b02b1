"""Azure Blob Storage: the URIs MLflow writes for it, `wasbs://CONTAINER@ACCOUNT.blob.core.
windows.net/PATH` (and `wasb://`), ADLS Gen2's `abfss://CONTAINER@ACCOUNT.dfs.core.
windows.net/PATH`, whose files the Blob endpoint serves too, and the blob URLs KServe's
storageUri takes, `https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`.

Credentials as MLflow's own Azure repository takes them (mlflow/store/artifact/
azure_blob_artifact_repo.py): AZURE_STORAGE_CONNECTION_STRING (which may name the endpoint,
as Azurite's does), else AZURE_STORAGE_ACCESS_KEY for the URI's account, else Azure's default
credential chain (azure-identity: workload identity, managed identity, the CLI). Listing and
properties go through azure-storage-blob; the bytes through plain GETs the pump threads send,
on a read-only SAS made from the account key or, with a token credential, a bearer token.

Pinned by ETag (`If-Match`: Azure answers 412 `ConditionNotMet` when the blob was replaced).
Verified by the blob's Content-MD5 where it has one: Azure computes it for a blob written in
one Put Blob (MLflow's uploads under 64 MiB), never for one committed from blocks; such a blob
has only its size checked, and the manifest says why.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from syncd.core.checksum import Algorithm
from syncd.core.manifest import RemoteObject
from syncd.core.plan import ObjectFacts, Range
from syncd.errors import RetryableError, SourceError
from syncd.remote.failure import describe_failure, status_error
from syncd.remote.http_get import open_plain_get, session
from syncd.remote.retry import retry_reason
from syncd.remote.small import SMALL_FILE_LIMIT, too_large
from syncd.remote.store import Body, Capabilities, PlainGet
from syncd.settings import Settings

__all__ = ["AzureLocation", "AzureStore", "download_facts", "open_store", "parse", "translate"]

_URI = re.compile(
    r"^(?P<scheme>wasbs?|abfss?)://(?P<container>[^@/]+)@(?P<account>[a-z0-9]+)"
    r"\.(?P<kind>blob|dfs)\.(?P<suffix>[a-z0-9.]+?)(?:/(?P<path>.*))?$"
)
_URL = re.compile(
    r"^(?P<scheme>https)://(?P<account>[a-z0-9]+)\.(?P<kind>blob|dfs)\.(?P<suffix>core\.[a-z0-9.]+)"
    r"/(?P<container>[^/]+)(?:/(?P<path>.*))?$"
)
_API_VERSION = "2021-08-06"  # sent with bearer tokens, which need one
_SAS_FOR = timedelta(hours=1)
_RENEW_AFTER = 900.0  # seconds a SAS or token is reused (it lives an hour)
_SCOPE = "https://storage.azure.com/.default"


@dataclass(frozen=True)
class AzureLocation:
    """A container of an account and a path prefix in it (no trailing slash)."""

    scheme: str
    container: str
    account: str
    host: str  # as the URI spelled it: ACCOUNT.blob.core.windows.net or ACCOUNT.dfs....
    prefix: str

    @property
    def uri(self) -> str:
        if self.scheme == "https":
            base = f"https://{self.host}/{self.container}"
        else:
            base = f"{self.scheme}://{self.container}@{self.host}"
        return f"{base}/{self.prefix}" if self.prefix else base

    @property
    def blob_endpoint(self) -> str:
        """The account's Blob endpoint (ADLS Gen2's `dfs` host serves files as blobs too)."""
        return "https://" + self.host.replace(".dfs.", ".blob.", 1)

    def child(self, relative: str) -> AzureLocation:
        name = f"{self.prefix}/{relative.strip('/')}" if self.prefix else relative.strip("/")
        return AzureLocation(self.scheme, self.container, self.account, self.host, name)


def parse(uri: str) -> AzureLocation:
    match = _URI.match(uri) or _URL.match(uri)
    if match is None:
        raise SourceError(
            f"{uri} is not an Azure Blob URI: write wasbs://CONTAINER@ACCOUNT.blob.core."
            "windows.net/PATH (or abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH, "
            "https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH)"
        )
    host = f"{match['account']}.{match['kind']}.{match['suffix']}"
    prefix = (match["path"] or "").strip("/")
    return AzureLocation(match["scheme"], match["container"], match["account"], host, prefix)


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[AzureStore]:
    try:
        import azure.storage.blob.aio  # noqa: F401
    except ImportError as exc:
        raise SourceError(
            "Azure Blob sources need azure-storage-blob: pip install 'syncd[azure]'"
        ) from exc
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(session())
        store = AzureStore(client, stack)
        yield store


class AzureStore:
    """List, state and read blobs of any account (one SDK client per account)."""

    capabilities = Capabilities(ranged=True, plain_http=True)

    def __init__(self, client: aiohttp.ClientSession, stack: AsyncExitStack) -> None:
        self._client = client
        self._stack = stack
        self._services: dict[str, _Account] = {}
        self._opening = asyncio.Lock()

    async def _account(self, location: AzureLocation) -> _Account:
        account = self._services.get(location.account)
        if account is None:
            async with self._opening:  # one client per account, however many ask at once
                account = self._services.get(location.account)
                if account is None:
                    account = await _Account.open(location, self._stack)
                    self._services[location.account] = account
        return account

    async def list_objects(self, location: AzureLocation) -> list[RemoteObject]:
        account = await self._account(location)
        prefix = location.prefix + "/" if location.prefix else ""
        container = account.service.get_container_client(location.container)
        found: list[RemoteObject] = []
        try:
            async for blob in container.list_blobs(name_starts_with=prefix):
                relative = blob.name[len(prefix) :]
                if relative and not relative.endswith("/") and blob.size is not None:
                    found.append(RemoteObject(relative, int(blob.size), _token(blob.etag)))
        except Exception as exc:
            raise translate(exc, f"listing {location.uri}") from exc
        return found

    async def read(self, location: AzureLocation) -> bytes | None:
        account = await self._account(location)
        blob = account.service.get_blob_client(location.container, location.prefix)
        try:
            # One bounded range: a 5 GB blob named model_context.json costs 1 MiB, not 5 GB.
            downloader = await blob.download_blob(offset=0, length=SMALL_FILE_LIMIT + 1)
            data: bytes = await downloader.readall()
            if len(data) > SMALL_FILE_LIMIT:
                raise too_large(location.uri)
            return data
        except SourceError:
            raise
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise translate(exc, f"reading {location.uri}") from exc

    async def facts(self, location: AzureLocation) -> ObjectFacts:
        account = await self._account(location)
        blob = account.service.get_blob_client(location.container, location.prefix)
        try:
            properties = await blob.get_blob_properties()
        except Exception as exc:
            raise translate(exc, f"HEAD {location.uri}") from exc
        md5 = properties.content_settings.content_md5
        return _facts(int(properties.size), _token(properties.etag), bytes(md5) if md5 else None)

    async def plain_get(
        self, location: AzureLocation, byte_range: Range | None, pin: str | None
    ) -> PlainGet:
        account = await self._account(location)
        url, headers = await account.authorized(location)
        if pin:
            # Pinned to the ETag listed: a replaced blob answers 412, never a splice of two.
            headers["If-Match"] = f'"{pin}"'
        return PlainGet(url, headers, pin)

    def open_get(
        self, location: AzureLocation, byte_range: Range | None, pin: str | None
    ) -> AbstractAsyncContextManager[tuple[ObjectFacts | None, Body]]:
        return open_plain_get(self._client, self, location, byte_range, pin)

    def facts_from_headers(self, headers: Mapping[str, str], pin: str | None) -> ObjectFacts:
        return download_facts(headers)


class _Account:
    """One account's SDK client, and how a plain GET of its blobs is authorized."""

    def __init__(self, service: Any, key: str | None, sas: str | None, credential: Any) -> None:
        self.service = service
        self._key = key
        self._sas = sas
        self._credential = credential
        self._signed: dict[str, tuple[str, float]] = {}
        self._bearer: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, location: AzureLocation, stack: AsyncExitStack) -> _Account:
        from azure.storage.blob.aio import BlobServiceClient

        connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        key = os.environ.get("AZURE_STORAGE_ACCESS_KEY")
        credential: Any = None
        if connection:
            try:
                service = BlobServiceClient.from_connection_string(connection)
            except ValueError as exc:
                raise SourceError(f"AZURE_STORAGE_CONNECTION_STRING: {exc}") from exc
            key = getattr(service.credential, "account_key", None)
        elif key:
            service = BlobServiceClient(location.blob_endpoint, credential=key)
        else:
            try:
                from azure.identity.aio import DefaultAzureCredential
            except ImportError as exc:
                raise SourceError(
                    f"{location.uri}: no AZURE_STORAGE_CONNECTION_STRING or "
                    "AZURE_STORAGE_ACCESS_KEY, and azure-identity (the default credential "
                    "chain) is not installed: pip install 'syncd[azure]'"
                ) from exc
            credential = await stack.enter_async_context(DefaultAzureCredential())
            service = BlobServiceClient(location.blob_endpoint, credential=credential)
        await stack.enter_async_context(service)
        query = service.url.partition("?")[2]
        return cls(service, key, query or None, credential)

    async def authorized(self, location: AzureLocation) -> tuple[str, dict[str, str]]:
        """The blob's URL and headers for a plain GET: a read-only SAS made from the key
        (cached, renewed well before its hour), the connection string's own SAS, or a bearer
        token of the default credential."""
        blob = self.service.get_blob_client(location.container, location.prefix)
        url = blob.url.partition("?")[0]
        if self._key:
            return f"{url}?{self._blob_sas(location)}", {}
        if self._sas:
            return f"{url}?{self._sas}", {}
        return url, {"Authorization": f"Bearer {await self._token()}", "x-ms-version": _API_VERSION}

    def _blob_sas(self, location: AzureLocation) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = time.monotonic()
        cached = self._signed.get(location.uri)
        if cached is not None and now - cached[1] < _RENEW_AFTER:
            return cached[0]
        if len(self._signed) >= 4096:
            self._signed.clear()
        sas = generate_blob_sas(
            self.service.account_name,
            location.container,
            location.prefix,
            account_key=self._key,
            permission=BlobSasPermissions(read=True),
            expiry=datetime.now(UTC) + _SAS_FOR,
        )
        self._signed[location.uri] = (sas, now)
        return sas

    async def _token(self) -> str:
        async with self._lock:
            if self._bearer is None or time.monotonic() - self._bearer[1] > _RENEW_AFTER:
                try:
                    token = await self._credential.get_token(_SCOPE)
                except Exception as exc:
                    raise SourceError(f"no Azure credentials: {describe_failure(exc)}") from exc
                self._bearer = (token.token, time.monotonic())
            return self._bearer[0]


def download_facts(headers: Mapping[str, str]) -> ObjectFacts:
    """A whole GET's size, ETag and (where the blob has one) Content-MD5."""
    md5 = headers.get("content-md5")
    return _facts(
        int(headers.get("content-length", 0)),
        _token(headers.get("etag", "")),
        _b64(md5) if md5 else None,
    )


def translate(error: Exception, what: str, pin: str = "") -> Exception:
    """An azure-core error as a syncd error (the status table every store uses)."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

    if isinstance(error, ClientAuthenticationError):
        return SourceError(f"{what}: not authorized ({_first_line(error)})")
    if isinstance(error, HttpResponseError) and _status(error):
        code = str(getattr(error, "error_code", "") or "")
        return status_error(_status(error), code, what, pin)
    if isinstance(error, AzureError | aiohttp.ClientError | OSError | TimeoutError):
        # A transport failure (ServiceRequestError, ServiceResponseError) or another of the
        # SDK's: another attempt may cure it.
        return RetryableError(f"{what}: {describe_failure(error)}", retry_reason(error))
    return error


def _status(error: Exception) -> int:
    status = getattr(error, "status_code", None)
    return int(status) if isinstance(status, int) else 0


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _token(etag: str | None) -> str:
    """Azure's ETag as its version token: the quotes off, the case kept (`If-Match` compares
    it exactly)."""
    return (etag or "").strip().strip('"')


def _facts(size: int, etag: str, md5: bytes | None) -> ObjectFacts:
    if md5:
        return ObjectFacts(size=size, etag=etag, checksums={Algorithm.MD5: md5.hex()})
    return ObjectFacts(
        size=size,
        etag=etag,
        unchecked_because="Azure blob without a Content-MD5 (committed from blocks): "
        "only its size can be checked",
    )


def _b64(value: str) -> bytes | None:
    import base64
    import binascii

    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
