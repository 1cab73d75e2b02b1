"""Presigned GET URLs for the pump threads, at a fraction of botocore's per-call cost.

`generate_presigned_url` resolves the endpoint ruleset and runs the client's event hooks on
every call: ~0.25 ms of event-loop CPU per object offline (`python -m tests.bench.micro`; more
under load, where it was the largest item of the loop's profile for 2,000 small files). The
endpoint and addressing style depend only on the bucket, so the first URL of a bucket comes
from botocore's full path and teaches where objects of that bucket live; every later URL is
that base plus the key, signed by awscrt's SigV4 query signer, in C (0.017 ms against
`generate_presigned_url`'s 0.23 ms, `python -m tests.bench.micro`; botocore's own
`S3SigV4QueryAuth`, used here before, held the GIL ~0.3 ms a file under load, the largest
runtime item of `py-spy record --gil` of `python -m tests.bench.fetch` for 2,000 small
files). A base that cannot be derived (a URL shape botocore never made so far) leaves every
URL of that bucket to the full path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from awscrt.auth import (
    AwsCredentialsProvider,
    AwsSignatureType,
    AwsSignedBodyValue,
    AwsSigningAlgorithm,
    AwsSigningConfig,
    aws_sign_request,
)
from awscrt.http import HttpHeaders, HttpRequest
from botocore.utils import percent_encode

__all__ = ["UrlSigner"]

_CREDENTIALS_FOR = 60.0  # seconds a frozen copy of refreshable credentials is reused


@dataclass(frozen=True)
class _Base:
    """Where a bucket's objects live: `origin` + `path` + the encoded key."""

    origin: str  # scheme://host[:port]
    host: str  # the signed Host header
    path: str  # ends in "/"


class UrlSigner:
    """Presigns GETs of one client's objects (its region, its credential chain)."""

    def __init__(self, client: Any, session: Any, region: str) -> None:
        self._client = client
        self._session = session
        self._region = region
        self._bases: dict[str, _Base | None] = {}  # bucket -> before the key (None: unknown)
        self._signing: AwsCredentialsProvider | None = None  # the frozen credentials, for CRT
        self._frozen_at = 0.0

    async def url(self, bucket: str, key: str, expires: int, checksums: bool) -> str:
        """A GET URL valid `expires` seconds; with `checksums`, `x-amz-checksum-mode:
        ENABLED` is a signed header the request must send."""
        base = self._bases.get(bucket)
        provider = await self._frozen_credentials() if base else None
        if base is None or provider is None:
            full = await self._full(bucket, key, expires, checksums)
            if bucket not in self._bases:
                self._bases[bucket] = _base_of(full, key)
            return full
        headers = [("host", base.host)]
        if checksums:
            headers.append(("x-amz-checksum-mode", "ENABLED"))
        request = HttpRequest("GET", base.path + _encoded(key), HttpHeaders(headers))
        config = AwsSigningConfig(
            algorithm=AwsSigningAlgorithm.V4,
            signature_type=AwsSignatureType.HTTP_REQUEST_QUERY_PARAMS,
            credentials_provider=provider,
            region=self._region,
            service="s3",
            # S3's rules, as botocore signs for it: the path as sent, encoded once, and
            # the body left out of the signature.
            use_double_uri_encode=False,
            should_normalize_uri_path=False,
            signed_body_value=AwsSignedBodyValue.UNSIGNED_PAYLOAD,
            expiration_in_seconds=expires,
        )
        # Static credentials: the future is done when the call returns (no I/O).
        signed = aws_sign_request(request, config).result()
        return base.origin + str(signed.path)

    async def _full(self, bucket: str, key: str, expires: int, checksums: bool) -> str:
        params = {"Bucket": bucket, "Key": key}
        if checksums:
            params["ChecksumMode"] = "ENABLED"
        url: str = await self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires
        )
        return url

    async def _frozen_credentials(self) -> AwsCredentialsProvider | None:
        """The chain's current credentials (refreshed by botocore when near expiry), as a
        static provider for CRT's signer; None without credentials."""
        now = time.monotonic()
        if self._signing is None or now - self._frozen_at > _CREDENTIALS_FOR:
            found = await self._session.get_credentials()
            if found is None:
                return None
            frozen = await found.get_frozen_credentials()
            self._signing = AwsCredentialsProvider.new_static(
                frozen.access_key, frozen.secret_key, frozen.token
            )
            self._frozen_at = now
        return self._signing


def _encoded(key: str) -> str:
    # As botocore serialises a key into the request path.
    encoded: str = percent_encode(key, safe="/~")
    return encoded


def _base_of(url: str, key: str) -> _Base | None:
    """The part of a presigned URL before the key, or None when the URL does not end in it."""
    parts = urlsplit(url)
    encoded = _encoded(key)
    if not key or not parts.path.endswith("/" + encoded) or not parts.netloc:
        return None
    origin = f"{parts.scheme}://{parts.netloc}"
    return _Base(origin, parts.netloc, parts.path[: -len(encoded)])
