"""Presigned GET URLs for the pump threads, at about a third of botocore's per-call cost.

`generate_presigned_url` resolves the endpoint ruleset and runs the client's event hooks on
every call: ~0.25 ms of event-loop CPU per object offline (more under load, where it was the
largest item of the loop's profile for 2,000 small files). The endpoint and addressing style
depend only on the bucket, so the first URL of a bucket comes from botocore's full path and
teaches where objects of that bucket live; every later URL is that base plus the key, signed
by botocore's own SigV4 query signer (~0.08 ms; both from `python -m tests.bench.micro`). A
base that cannot be derived (a URL shape botocore never made so far) leaves every URL of that
bucket to the full path.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.utils import percent_encode

__all__ = ["UrlSigner"]

_CREDENTIALS_FOR = 60.0  # seconds a frozen copy of refreshable credentials is reused


class UrlSigner:
    """Presigns GETs of one client's objects (its region, its credential chain)."""

    def __init__(self, client: Any, session: Any, region: str) -> None:
        self._client = client
        self._session = session
        self._region = region
        self._bases: dict[str, str | None] = {}  # bucket -> URL before the key (None: unknown)
        self._credentials: Any = None
        self._frozen_at = 0.0

    async def url(self, bucket: str, key: str, expires: int, checksums: bool) -> str:
        """A GET URL valid `expires` seconds; with `checksums`, `x-amz-checksum-mode:
        ENABLED` is a signed header the request must send."""
        base = self._bases.get(bucket)
        credentials = await self._frozen_credentials() if base else None
        if base is None or credentials is None:
            full = await self._full(bucket, key, expires, checksums)
            if bucket not in self._bases:
                self._bases[bucket] = _base_of(full, key)
            return full
        headers = {"x-amz-checksum-mode": "ENABLED"} if checksums else {}
        request = AWSRequest(method="GET", url=base + _encoded(key), headers=headers)
        S3SigV4QueryAuth(credentials, "s3", self._region, expires=expires).add_auth(request)
        url: str = request.prepare().url
        return url

    async def _full(self, bucket: str, key: str, expires: int, checksums: bool) -> str:
        params = {"Bucket": bucket, "Key": key}
        if checksums:
            params["ChecksumMode"] = "ENABLED"
        url: str = await self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires
        )
        return url

    async def _frozen_credentials(self) -> Any:
        """The chain's current credentials (refreshed by botocore when near expiry)."""
        now = time.monotonic()
        if self._credentials is None or now - self._frozen_at > _CREDENTIALS_FOR:
            found = await self._session.get_credentials()
            if found is None:
                return None
            self._credentials = await found.get_frozen_credentials()
            self._frozen_at = now
        return self._credentials


def _encoded(key: str) -> str:
    # As botocore serialises a key into the request path.
    encoded: str = percent_encode(key, safe="/~")
    return encoded


def _base_of(url: str, key: str) -> str | None:
    """The part of a presigned URL before the key, or None when the URL does not end in it."""
    path = url.split("?", 1)[0]
    encoded = _encoded(key)
    if not key or not path.endswith("/" + encoded):
        return None
    return path[: -len(encoded)]
