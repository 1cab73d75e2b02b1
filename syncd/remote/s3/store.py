"""S3 through aiobotocore: listing, HEAD facts, ranged GETs (async, or presigned for the pump
threads); botocore's errors translated here, at the store's boundary."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    FlexibleChecksumError,
    NoCredentialsError,
)

from syncd.core.checksum import Algorithm
from syncd.core.manifest import RemoteObject
from syncd.core.plan import ObjectFacts, Range, unquote_etag
from syncd.errors import ChecksumMismatchError, RetryableError, SourceError
from syncd.remote.failure import status_error
from syncd.remote.ranges import check_content_range
from syncd.remote.retry import retry_reason
from syncd.remote.s3.presign import UrlSigner
from syncd.remote.small import SMALL_FILE_LIMIT, too_large
from syncd.remote.store import BucketLocation, Capabilities, PlainGet
from syncd.settings import S3Settings

__all__ = ["S3Location", "S3ObjectStore", "facts_from_http_headers", "parse_s3_uri", "part_layout"]

_BOTOCORE_MISMATCH = re.compile(r"Expected checksum (\S+) did not match calculated checksum: (\S+)")
_URL_RENEW_AFTER = 900.0  # presigned URLs live an hour; renewed after a quarter of it
_URLS_KEPT = 4096


@dataclass(frozen=True)
class S3Location(BucketLocation):
    """A bucket and a key prefix (no trailing slash)."""

    scheme = "s3"


def parse_s3_uri(uri: str) -> S3Location:
    """`s3://bucket/some/prefix/` -> S3Location('bucket', 'some/prefix')."""
    if not uri.startswith("s3://"):
        raise SourceError(f"not an s3:// URI: {uri}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise SourceError(f"no bucket in {uri}")
    return S3Location(bucket, prefix.strip("/"))


def _status(error: ClientError) -> int:
    status: int = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status


def _code(error: ClientError) -> str:
    code: str = error.response.get("Error", {}).get("Code", "")
    return code


def translate(error: Exception, what: str, etag: str | None = None) -> Exception:
    """A botocore/aiohttp error as a syncd error: retryable, object changed (against `etag`),
    or final."""
    if isinstance(error, ClientError):
        return status_error(_status(error), _code(error), what, etag or "")
    if isinstance(error, NoCredentialsError):
        return SourceError(f"{what}: no AWS credentials found (env, profile, IRSA or IMDS)")
    if isinstance(error, EndpointConnectionError):
        return RetryableError(f"{what}: cannot connect to S3 endpoint: {error}", "connection")
    if isinstance(error, BotoCoreError | OSError | TimeoutError | aiohttp.ClientError):
        return RetryableError(f"{what}: {type(error).__name__}: {error}", retry_reason(error))
    if isinstance(error, asyncio.IncompleteReadError):
        return RetryableError(f"{what}: short body", "bad_response")
    return error


class S3ObjectStore:
    """The few S3 calls syncd makes, on one pooled aiobotocore client."""

    capabilities = Capabilities(ranged=True, plain_http=True)

    def __init__(self, client: Any, signer: UrlSigner) -> None:
        self._client = client
        self._signer = signer
        self._urls: dict[tuple[str, bool], tuple[str, float]] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: S3Settings) -> AsyncIterator[S3ObjectStore]:
        """A store whose client lives as long as the context (credentials: the default chain)."""
        config = AioConfig(
            max_pool_connections=settings.max_concurrency + 4,
            connect_timeout=10,
            read_timeout=60,
            # syncd is the one retry layer (per part, with jitter, counted in metrics);
            # botocore retrying underneath would multiply attempts and hide them.
            retries={"total_max_attempts": 1, "mode": "standard"},
            # syncd verifies every byte itself as it streams; a second CRC in botocore would
            # only cost CPU.
            response_checksum_validation="when_required",
            # Presigned URLs (the threaded range reader's) need SigV4, which every S3 and
            # S3-compatible server takes; botocore would presign S3 with SigV2 by default.
            signature_version="s3v4",
        )
        session = get_session()
        # Timestamps (a listing's LastModified, a HEAD's Last-Modified) stay the strings S3
        # sent: syncd reads none of them, and botocore parses each with dateutil, ~0.15 ms
        # an object, a tenth of the event loop's CPU for 2,000 small files (cProfile of
        # `python -m tests.bench.fetch`). The AWS CLI sets the same for the same reason.
        session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
        region = settings.region or "us-east-1"
        # TLS: the configured roots (s3.ca_bundle / AWS_CA_BUNDLE), or no check at all where the
        # operator said so (S3_VERIFY_SSL=0, as KServe injects for a self-signed MinIO).
        verify: str | bool | None = settings.ca_bundle or (None if settings.verify_ssl else False)
        async with session.create_client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=region,
            config=config,
            verify=verify,
        ) as client:
            yield cls(client, UrlSigner(client, session, region))

    async def list_objects(self, location: S3Location) -> list[RemoteObject]:
        """Every object under the prefix, with paths relative to it (folder markers skipped)."""
        prefix = location.prefix + "/" if location.prefix else ""
        objects: list[RemoteObject] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=location.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    relative = item["Key"][len(prefix) :]
                    if not relative or relative.endswith("/"):
                        continue
                    objects.append(
                        RemoteObject(relative, int(item["Size"]), unquote_etag(item["ETag"]))
                    )
        except Exception as exc:
            raise translate(exc, f"listing {location.uri}") from exc
        return objects

    async def read(self, location: S3Location) -> bytes | None:
        """A small object's bytes, or None when it does not exist."""
        try:
            response = await self._client.get_object(Bucket=location.bucket, Key=location.prefix)
            async with response["Body"] as body:
                size = response.get("ContentLength")
                if isinstance(size, int) and size > SMALL_FILE_LIMIT:
                    raise too_large(location.uri, size)
                # read(n) hands out what one chunk holds, not n bytes: loop to the end.
                data = bytearray()
                while chunk := await body.read(SMALL_FILE_LIMIT + 1 - len(data)):
                    data += chunk
                    if len(data) > SMALL_FILE_LIMIT:
                        raise too_large(location.uri)
                return bytes(data)
        except SourceError:
            raise
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404") or _status(exc) == 404:
                return None
            raise translate(exc, f"reading {location.uri}") from exc
        except Exception as exc:
            raise translate(exc, f"reading {location.uri}") from exc

    async def head(self, location: S3Location, part_number: int | None = None) -> ObjectFacts:
        """Size, ETag, checksums and (with part_number) the upload part layout."""
        kwargs: dict[str, Any] = {"Bucket": location.bucket, "Key": location.prefix}
        kwargs["ChecksumMode"] = "ENABLED"
        if part_number is not None:
            kwargs["PartNumber"] = part_number
        try:
            response = await self._client.head_object(**kwargs)
        except Exception as exc:
            raise translate(exc, f"HEAD {location.uri}") from exc
        return _facts_from_response(response)

    async def facts(self, location: S3Location) -> ObjectFacts:
        """HEAD, with the upload's part layout (a HEAD of part 1) where it was uploaded in
        parts."""
        return await part_layout(self.head, location, await self.head(location))

    def facts_from_headers(self, headers: Mapping[str, str], pin: str | None) -> ObjectFacts:
        return facts_from_http_headers(headers)

    async def plain_get(
        self, location: S3Location, byte_range: Range | None, pin: str | None
    ) -> PlainGet:
        """A presigned URL (renewed well before its hour is up), `If-Match` the pin; a whole
        GET asks for the object's checksum headers, which its signature covers."""
        whole = byte_range is None
        url = await self._presigned(location, checksums=whole)
        headers = {"x-amz-checksum-mode": "ENABLED"} if whole else {}
        if pin:
            # Every part is pinned to the version planned against: a replaced object fails
            # with 412 instead of splicing two versions into one file.
            headers["If-Match"] = f'"{pin}"'
        return PlainGet(url, headers, pin)

    async def _presigned(self, location: S3Location, checksums: bool) -> str:
        now = time.monotonic()
        key = (location.uri, checksums)
        cached = self._urls.get(key)
        if cached is not None and now - cached[1] < _URL_RENEW_AFTER:
            return cached[0]
        url = await self.presign_get(location, expires=3600, checksums=checksums)
        if len(self._urls) >= _URLS_KEPT:
            # Bounded: thousands of small objects each sign once; dropping a URL only costs
            # signing it again (~0.08 ms, `python -m tests.bench.micro`).
            self._urls.clear()
        self._urls[key] = (url, now)
        return url

    async def presign_get(
        self, location: S3Location, expires: int = 3600, checksums: bool = False
    ) -> str:
        """A presigned GET URL for the object (valid `expires` seconds), for the pump threads.

        With `checksums`, `x-amz-checksum-mode: ENABLED` is a signed header: the request must
        send it, and the response carries the object's checksums.
        """
        try:
            return await self._signer.url(location.bucket, location.prefix, expires, checksums)
        except Exception as exc:
            raise translate(exc, f"presigning {location.uri}") from exc

    @asynccontextmanager
    async def open_get(
        self, location: S3Location, byte_range: Range | None, etag: str | None
    ) -> AsyncIterator[tuple[ObjectFacts | None, Any]]:
        """Open a GET (ranged when `byte_range`), checked against the ETag and Content-Range.

        Yields the object's facts (whole GETs only: a ranged response carries no object
        checksum) and the streaming body.
        """
        kwargs: dict[str, Any] = {"Bucket": location.bucket, "Key": location.prefix}
        if etag:
            # Every part is pinned to the version we planned against: a replaced object fails
            # with 412 instead of splicing two versions into one file.
            kwargs["IfMatch"] = f'"{etag}"'
        if byte_range is not None:
            kwargs["Range"] = byte_range.header
        else:
            kwargs["ChecksumMode"] = "ENABLED"
        try:
            response = await self._client.get_object(**kwargs)
        except Exception as exc:
            raise translate(exc, f"GET {location.uri}", etag) from exc
        body = response["Body"]
        try:
            if byte_range is not None:
                check_content_range(
                    location.uri,
                    response.get("ContentRange"),
                    int(response.get("ContentLength", -1)),
                    byte_range,
                )
                yield None, _Body(body, location.uri)
            else:
                yield _facts_from_response(response), _Body(body, location.uri)
        finally:
            body.close()


class _Body:
    """A response body whose read errors arrive as syncd errors."""

    def __init__(self, body: Any, uri: str) -> None:
        self._body = body
        self._uri = uri

    async def read(self, amount: int) -> bytes:
        try:
            data: bytes = await self._body.read(amount)
            return data
        except FlexibleChecksumError as exc:
            # botocore checks whole-object GETs sent with ChecksumMode itself, at the last read.
            match = _BOTOCORE_MISMATCH.search(str(exc))
            expected, actual = match.groups() if match else ("?", str(exc))
            raise ChecksumMismatchError(self._uri, "checksum", expected, actual) from exc
        except Exception as exc:
            raise translate(exc, f"reading GET {self._uri}") from exc


def facts_from_http_headers(headers: Mapping[str, str]) -> ObjectFacts:
    """ObjectFacts from a GET response's raw headers (names in lower case)."""
    checksums: dict[Algorithm, str] = {
        algorithm: headers[f"x-amz-checksum-{algorithm.value}"]
        for algorithm in Algorithm
        if algorithm is not Algorithm.MD5 and headers.get(f"x-amz-checksum-{algorithm.value}")
    }
    parts_count = headers.get("x-amz-mp-parts-count")
    return ObjectFacts(
        size=int(headers.get("content-length", 0)),
        etag=unquote_etag(headers.get("etag", "")),
        parts_count=int(parts_count) if parts_count else None,
        checksums=checksums,
        checksum_type=headers.get("x-amz-checksum-type"),
        server_side_encryption=headers.get("x-amz-server-side-encryption"),
    )


def _facts_from_response(response: dict[str, Any]) -> ObjectFacts:
    """ObjectFacts from a HeadObject/GetObject response."""
    checksums: dict[Algorithm, str] = {
        algorithm: str(response[algorithm.s3_field])
        for algorithm in Algorithm
        if algorithm is not Algorithm.MD5 and response.get(algorithm.s3_field)
    }
    parts_count = response.get("PartsCount")
    return ObjectFacts(
        size=int(response.get("ContentLength", 0)),
        etag=unquote_etag(response.get("ETag", "")),
        parts_count=int(parts_count) if parts_count else None,
        checksums=checksums,
        checksum_type=response.get("ChecksumType"),
        server_side_encryption=response.get("ServerSideEncryption"),
    )


async def part_layout(
    head: Callable[..., Awaitable[ObjectFacts]], location: S3Location, facts: ObjectFacts
) -> ObjectFacts:
    """`facts` with the part count and first part's size, for an object uploaded in parts
    (a multipart ETag or composite checksum): what a per-part check must cut ranges by."""
    if "-" in facts.etag or any("-" in value for value in facts.checksums.values()):
        first = await head(location, part_number=1)
        if first.parts_count:  # one part counts: its checksums are per part too
            return replace(facts, parts_count=first.parts_count, first_part_size=first.size)
    return facts
