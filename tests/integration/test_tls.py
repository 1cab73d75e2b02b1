"""Reads over HTTPS, as from real S3: moto behind the fault proxy serving TLS (self-signed)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from syncd.core.plan import Range
from syncd.errors import LocalWriteError, ObjectChangedError, RetryableError
from syncd.metrics import Metrics
from syncd.remote.store import PlainGet
from syncd.transfer.blocking_get import Abort, BlockingRangeReader
from tests.conftest import BUCKET
from tests.integration.test_transfer import MiB, download, put
from tests.support.faulty_proxy import FaultyS3Proxy


@pytest.mark.parametrize(
    ("size", "multipart", "verified_by", "whole_gets"),
    [
        (13 * MiB + 5, True, "crc32-composite", 0),  # a range per 5 MiB upload part
        (300 * 1024, False, "crc32", 1),  # under part_size: one whole GET
    ],
)
async def test_pump_threads_read_over_https(
    moto_server: Any,
    https_faults: FaultyS3Proxy,
    certificate: tuple[Path, Path],
    tmp_path: Path,
    size: int,
    multipart: bool,
    verified_by: str,
    whole_gets: int,
) -> None:
    data = os.urandom(size)
    key = put(moto_server.url, data, multipart=multipart)
    entry = await download(https_faults.url, key, tmp_path / "x", ca_bundle=str(certificate[0]))
    assert (tmp_path / "x").read_bytes() == data
    assert entry.verified_by == verified_by
    kinds = https_faults.faults.get_kinds
    # Every byte came through the pump threads' presigned GETs, none through aiobotocore.
    assert kinds["header"] == 0
    assert kinds["presigned"] == (whole_gets or -(-size // (5 * MiB)))
    assert kinds["checksum-mode"] == whole_gets


async def test_cut_bodies_and_errors_over_https_are_retried(
    moto_server: Any,
    https_faults: FaultyS3Proxy,
    certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    data = os.urandom(10 * MiB)
    key = put(moto_server.url, data, multipart=True)
    https_faults.faults.truncate[key] = 1  # half a body, then the connection closed
    https_faults.faults.server_error[key] = 1
    metrics = Metrics()
    entry = await download(
        https_faults.url,
        key,
        tmp_path / "x",
        metrics,
        max_attempts=5,
        ca_bundle=str(certificate[0]),
    )
    assert (tmp_path / "x").read_bytes() == data
    assert entry.verified_by == "crc32-composite"
    retried = {
        sample.labels["reason"]: sample.value
        for metric in metrics.registry.collect()
        if metric.name == "syncd_request_retries"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    assert retried["bad_response"] == 1  # the cut body: short, not taken for a whole one
    assert retried["throttled"] == 1  # the 503 SlowDown
    assert https_faults.faults.get_kinds["header"] == 0


def _presigned(endpoint: str, key: str) -> str:
    client = boto3.client(
        "s3", endpoint_url=endpoint, verify=False, config=Config(signature_version="s3v4")
    )
    url: str = client.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600
    )
    return url


def _read(reader: BlockingRangeReader, url: str, size: int, etag: str) -> bytes:
    out = bytearray(size)

    def write(data: memoryview, offset: int) -> None:
        out[offset : offset + len(data)] = data

    get = PlainGet(url, {"If-Match": f'"{etag}"'}, etag)
    reader.read_range(get, Range(0, size), write, Abort())
    return bytes(out)


def test_a_certificate_nobody_vouches_for_is_refused(
    moto_server: Any,
    https_faults: FaultyS3Proxy,
    certificate: tuple[Path, Path],
    s3_client: Any,
) -> None:
    """The default trust store does not know the self-signed certificate: no byte is read;
    with its CA bundle, or with verification turned off (`s3.verify_ssl: false`), it is."""
    data = os.urandom(MiB + 1)
    key = put(moto_server.url, data)
    etag = s3_client.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    url = _presigned(https_faults.url, key)
    with pytest.raises(RetryableError, match="CERTIFICATE_VERIFY_FAILED"):
        _read(BlockingRangeReader(256 * 1024, 10.0), url, len(data), etag)
    assert https_faults.faults.gets[f"/{BUCKET}/{key}"] == 0
    trusted = BlockingRangeReader(256 * 1024, 10.0, ca_bundle=str(certificate[0]))
    assert _read(trusted, url, len(data), etag) == data
    unchecked = BlockingRangeReader(256 * 1024, 10.0, verify_ssl=False)
    assert _read(unchecked, url, len(data), etag) == data


def test_a_disk_error_mid_range_drops_the_connection_it_left_half_read(
    moto_server: Any, s3_client: Any
) -> None:
    """The writer fails (a full disk) with most of the body still unread: that connection
    is closed, so the next GET on this thread gets a fresh one, not the old body's rest."""
    data = os.urandom(3 * MiB)
    key = put(moto_server.url, data)
    etag = s3_client.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    url = _presigned(moto_server.url, key)
    reader = BlockingRangeReader(256 * 1024, 10.0)

    def full_disk(data: memoryview, offset: int) -> None:
        raise LocalWriteError(OSError(errno.ENOSPC, "No space left on device"))

    get = PlainGet(url, {"If-Match": f'"{etag}"'}, etag)
    with pytest.raises(LocalWriteError):
        reader.read_range(get, Range(0, len(data)), full_disk, Abort())
    assert _read(reader, url, len(data), etag) == data


def test_an_object_changed_error_names_the_etag_it_expected(
    moto_server: Any, s3_client: Any
) -> None:
    key = put(moto_server.url, os.urandom(MiB))
    url = _presigned(moto_server.url, key)
    stale = "0" * 32
    with pytest.raises(ObjectChangedError, match=f"expected ETag {stale}"):
        _read(BlockingRangeReader(256 * 1024, 10.0), url, MiB, stale)
