"""S3 and S3-compatible servers (MinIO, rclone, moto): `s3://bucket/prefix`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from syncd.remote.s3.store import S3Location, S3ObjectStore, parse_s3_uri
from syncd.settings import Settings

__all__ = ["S3Location", "S3ObjectStore", "open_store", "parse"]

parse = parse_s3_uri


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[S3ObjectStore]:
    async with S3ObjectStore.open(settings.s3) as store:
        yield store
