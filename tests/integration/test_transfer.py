"""The transfer engine against a real S3 server (moto), with faults injected by a real proxy."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore.parsers
import botocore.utils
import pytest
from awscrt import checksums as crt
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from syncd.core.manifest import FileEntry, RemoteObject
from syncd.errors import ChecksumMismatchError, ObjectChangedError, RetriesExceededError
from syncd.local.direct import filesystem_type
from syncd.local.writeback import Writeback, sync_file_range_write
from syncd.metrics import Metrics
from syncd.remote.s3 import S3Location, S3ObjectStore
from syncd.remote.store import OneStore
from syncd.settings import S3Settings
from syncd.transfer.blocking_get import BlockingRangeReader
from syncd.transfer.engine import Downloader
from tests.conftest import BUCKET
from tests.support.faulty_proxy import FaultyS3Proxy

MiB = 1 << 20
# Ranged GETs are read by pump threads (the default) or streamed through aiobotocore (behind an
# HTTP proxy, or with s3.threaded_reads off): fault handling must hold for both.
BOTH_READ_PATHS = pytest.mark.parametrize("threaded_reads", [True, False], ids=["threads", "aio"])


async def no_sleep(_: float) -> None:
    return None


class Received:
    """A progress callback that remembers what arrived and signals the first bytes."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.first = asyncio.Event()

    def __call__(self, count: int) -> None:
        self.counts.append(count)
        self.first.set()


@asynccontextmanager
async def downloading(
    settings: S3Settings, key: str, dest: Path
) -> AsyncIterator[tuple[asyncio.Task[FileEntry], Received]]:
    """A download of `key` running in a task, yielded once its first bytes have arrived."""
    async with S3ObjectStore.open(settings) as store:
        (listed,) = await store.list_objects(S3Location(BUCKET, key.rsplit("/", 1)[0]))
        downloader = Downloader(settings, OneStore(store), sleep=no_sleep)
        received = Received()
        try:
            task = asyncio.create_task(
                downloader.download(S3Location(BUCKET, key), listed, dest, received)
            )
            await asyncio.wait_for(received.first.wait(), 60)
            yield task, received
        finally:
            downloader.close()


def put(
    endpoint: str,
    data: bytes,
    *,
    algorithm: str | None = "CRC32",
    multipart: bool = False,
    part_size: int = 5 * MiB,
) -> str:
    """Upload the way a client would: boto3, with or without a checksum, multipart or not."""
    key = f"transfer/{uuid.uuid4().hex}/blob.bin"
    config = Config(request_checksum_calculation="when_supported" if algorithm else "when_required")
    client = boto3.client("s3", endpoint_url=endpoint, config=config)
    extra: dict[str, Any] = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    threshold = part_size if multipart else len(data) + 1
    client.upload_fileobj(
        io.BytesIO(data),
        BUCKET,
        key,
        ExtraArgs=extra,
        Config=TransferConfig(multipart_threshold=threshold, multipart_chunksize=part_size),
    )
    return key


def threads_reading(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """A counter whose "now" is how many pump threads are inside a ranged read."""
    inside = Counter[str]()
    original = BlockingRangeReader.read_range

    def counted(self: BlockingRangeReader, *args: Any) -> None:
        inside["now"] += 1
        try:
            original(self, *args)
        finally:
            inside["now"] -= 1

    monkeypatch.setattr(BlockingRangeReader, "read_range", counted)
    return inside


async def download(
    endpoint: str, key: str, dest: Path, metrics: Metrics | None = None, **settings: Any
) -> FileEntry:
    options: dict[str, Any] = {"part_size": 4 * MiB, "chunk_size": 256 * 1024, "max_attempts": 3}
    options.update(settings)
    s3_settings = S3Settings(endpoint_url=endpoint, **options)
    async with S3ObjectStore.open(s3_settings) as store:
        location = S3Location(BUCKET, key)
        (listed,) = await store.list_objects(S3Location(BUCKET, key.rsplit("/", 1)[0]))
        obj = RemoteObject(listed.path, listed.size, listed.etag)
        downloader = Downloader(s3_settings, OneStore(store), metrics or Metrics(), sleep=no_sleep)
        progress: list[int] = []
        try:
            entry = await downloader.download(location, obj, dest, progress.append)
        finally:
            downloader.close()
        assert sum(progress) == obj.size  # retried bytes are taken back from progress
        return entry


async def download_listed(
    settings: S3Settings, key: str, dest: Path, **extra: Any
) -> tuple[FileEntry, Downloader]:
    """One download of `key` as listed, by a Downloader of its own (returned closed, for what
    it counted)."""
    async with S3ObjectStore.open(settings) as store:
        (listed,) = await store.list_objects(S3Location(BUCKET, key.rsplit("/", 1)[0]))
        downloader = Downloader(settings, OneStore(store), sleep=no_sleep, **extra)
        try:
            entry = await downloader.download(S3Location(BUCKET, key), listed, dest, lambda _: None)
        finally:
            downloader.close()
    return entry, downloader


CASES = [
    # (algorithm, multipart, verified_by)
    ("CRC32", False, "crc32"),
    ("CRC32C", False, "crc32c"),
    ("CRC64NVME", False, "crc64nvme"),
    ("SHA256", False, "sha256"),
    (None, False, "md5"),
    ("CRC32", True, "crc32-composite"),
    ("CRC32C", True, "crc32c-composite"),
    ("SHA256", True, "sha256-composite"),
    (None, True, "md5-multipart"),
]


@pytest.mark.parametrize(("algorithm", "multipart", "verified_by"), CASES)
async def test_every_checksum_kind_verified(
    moto_server: Any, tmp_path: Path, algorithm: str | None, multipart: bool, verified_by: str
) -> None:
    # 13 MiB: three upload parts of 5 MiB, or a single-part object cut into 4 MiB ranges.
    data = os.urandom(13 * MiB + 123)
    key = put(moto_server.url, data, algorithm=algorithm, multipart=multipart)
    dest = tmp_path / "out.bin"
    entry = await download(moto_server.url, key, dest)
    assert dest.read_bytes() == data
    assert entry.verified_by == verified_by
    assert entry.size == len(data)
    if multipart:
        assert entry.part_size == 5 * MiB


@BOTH_READ_PATHS
@pytest.mark.parametrize(
    ("algorithm", "verified_by"),
    [
        ("CRC32", "crc32-composite"),
        ("CRC32C", "crc32c-composite"),
        ("SHA256", "sha256-composite"),
        (None, "md5-multipart"),
    ],
)
async def test_one_get_takes_several_upload_parts(
    faults: FaultyS3Proxy,
    tmp_path: Path,
    threaded_reads: bool,
    algorithm: str | None,
    verified_by: str,
) -> None:
    """Per-part checks need whole parts, not one GET each: 5 MiB parts, 16 MiB wanted ->
    GETs of three parts, each part hashed on its own."""
    data = os.urandom(23 * MiB)
    key = put(faults.url, data, algorithm=algorithm, multipart=True)
    faults.faults.reset()
    entry = await download(
        faults.url, key, tmp_path / "x", part_size=16 * MiB, threaded_reads=threaded_reads
    )
    assert (tmp_path / "x").read_bytes() == data
    assert entry.verified_by == verified_by
    # the two GETs run at once: which one reaches the server first varies
    assert sorted(header for _, header in faults.faults.ranges) == [
        f"bytes=0-{15 * MiB - 1}",
        f"bytes={15 * MiB}-{23 * MiB - 1}",
    ]
    assert [end for end, _ in entry.range_crc32c] == [15 * MiB, 23 * MiB]


async def test_small_object_in_one_get(moto_server: Any, tmp_path: Path) -> None:
    data = b'{"model_type": "llama"}'
    key = put(moto_server.url, data, algorithm="CRC32C")
    entry = await download(moto_server.url, key, tmp_path / "config.json")
    assert (tmp_path / "config.json").read_bytes() == data
    assert entry.verified_by == "crc32c"


async def test_listing_and_reading_parse_no_timestamp(
    moto_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing syncd reads is a date, so botocore is told to leave them as strings: its
    dateutil parse cost ~0.15 ms for every listed object."""

    def refuse(value: str) -> None:
        raise AssertionError(f"a timestamp was parsed: {value}")

    monkeypatch.setattr(botocore.utils, "parse_timestamp", refuse)
    monkeypatch.setattr(botocore.parsers, "DEFAULT_TIMESTAMP_PARSER", refuse)
    data = os.urandom(9 * MiB)
    key = put(moto_server.url, data, multipart=True)  # a listing, a HEAD, ranged GETs
    await download(moto_server.url, key, tmp_path / "x", threaded_reads=False)
    assert (tmp_path / "x").read_bytes() == data


@BOTH_READ_PATHS
@pytest.mark.parametrize(
    ("algorithm", "verified_by"), [("CRC32C", "crc32c"), ("SHA256", "sha256"), (None, "md5")]
)
async def test_small_objects_read_like_large_ones(
    faults: FaultyS3Proxy,
    tmp_path: Path,
    threaded_reads: bool,
    algorithm: str | None,
    verified_by: str,
) -> None:
    """One read design: a small object's GET goes through the same pump threads (a presigned
    URL that asks for the checksum headers) unless threads are off."""
    data = os.urandom(100 * 1024)
    key = put(faults.url, data, algorithm=algorithm)
    faults.faults.reset()
    entry = await download(faults.url, key, tmp_path / "x", threaded_reads=threaded_reads)
    assert (tmp_path / "x").read_bytes() == data
    assert entry.verified_by == verified_by
    kinds = faults.faults.get_kinds
    assert kinds["presigned" if threaded_reads else "header"] == 1
    assert kinds["checksum-mode"] == 1
    assert entry.range_crc32c == ((len(data), crt.crc32c(data)),)


@BOTH_READ_PATHS
@pytest.mark.parametrize("size", [100 * 1024, 9 * MiB])
async def test_429_is_retried_on_every_read_path(
    faults: FaultyS3Proxy, tmp_path: Path, threaded_reads: bool, size: int
) -> None:
    data = os.urandom(size)
    key = put(faults.url, data, multipart=size > 5 * MiB)
    faults.faults.too_many_requests[key] = 2
    metrics = Metrics()
    await download(faults.url, key, tmp_path / "x", metrics, threaded_reads=threaded_reads)
    assert (tmp_path / "x").read_bytes() == data
    retried = metrics.registry.get_sample_value(
        "syncd_request_retries_total", {"reason": "throttled"}
    )
    assert retried == 2


async def test_empty_object(moto_server: Any, tmp_path: Path) -> None:
    key = put(moto_server.url, b"", algorithm=None)
    entry = await download(moto_server.url, key, tmp_path / "empty")
    assert (tmp_path / "empty").read_bytes() == b""
    assert entry.verified_by == "md5"
    assert entry.checksum == hashlib.md5(b"").hexdigest()


async def test_size_only_mode_is_recorded(moto_server: Any, tmp_path: Path) -> None:
    data = os.urandom(9 * MiB)
    key = put(moto_server.url, data, multipart=True)
    entry = await download(moto_server.url, key, tmp_path / "x", verify="size")
    assert (tmp_path / "x").read_bytes() == data
    assert entry.verified_by == "size"
    assert "s3.verify" in entry.note


@BOTH_READ_PATHS
async def test_corrupted_part_is_retried_and_counted(
    faults: FaultyS3Proxy, tmp_path: Path, threaded_reads: bool
) -> None:
    data = os.urandom(11 * MiB)
    key = put(faults.url, data, multipart=True)
    faults.faults.corrupt[key] = 1
    metrics = Metrics()
    entry = await download(faults.url, key, tmp_path / "x", metrics, threaded_reads=threaded_reads)
    assert (tmp_path / "x").read_bytes() == data
    assert entry.verified_by == "crc32-composite"
    assert metrics.registry.get_sample_value("syncd_checksum_failures_total") == 1


@pytest.mark.parametrize("multipart", [False, True])
async def test_persistent_corruption_is_never_accepted(
    faults: FaultyS3Proxy, tmp_path: Path, multipart: bool
) -> None:
    data = os.urandom(9 * MiB)
    key = put(faults.url, data, algorithm=None, multipart=multipart)
    faults.faults.corrupt[key] = -1  # every GET
    metrics = Metrics()
    with pytest.raises(ChecksumMismatchError) as caught:
        await download(faults.url, key, tmp_path / "x", metrics)
    assert caught.value.algorithm == ("md5-multipart" if multipart else "md5")
    assert metrics.registry.get_sample_value("syncd_checksum_failures_total") == 2


@BOTH_READ_PATHS
async def test_server_errors_and_cut_bodies_are_retried(
    faults: FaultyS3Proxy, tmp_path: Path, threaded_reads: bool
) -> None:
    data = os.urandom(10 * MiB)
    key = put(faults.url, data, multipart=True)
    faults.faults.server_error[key] = 2
    faults.faults.truncate[key] = 1
    metrics = Metrics()
    # three faults may all land on one range: give each range room for them
    await download(
        faults.url, key, tmp_path / "x", metrics, max_attempts=5, threaded_reads=threaded_reads
    )
    assert (tmp_path / "x").read_bytes() == data
    retries = sum(
        sample.value
        for metric in metrics.registry.collect()
        if metric.name == "syncd_request_retries"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    assert retries >= 3


@BOTH_READ_PATHS
async def test_retries_run_out_with_a_clear_error(
    faults: FaultyS3Proxy, tmp_path: Path, threaded_reads: bool
) -> None:
    # 9 MiB multipart: ranged GETs, so the read path under test is the one that fails.
    key = put(faults.url, os.urandom(9 * MiB), multipart=True)
    faults.faults.server_error[key] = -1
    with pytest.raises(RetriesExceededError, match="failed after 3 attempts"):
        await download(faults.url, key, tmp_path / "x", threaded_reads=threaded_reads)


async def test_object_replaced_during_download_fails_loudly(
    moto_server: Any, s3_client: Any, tmp_path: Path
) -> None:
    key = put(moto_server.url, os.urandom(9 * MiB), multipart=True)
    s3_settings = S3Settings(endpoint_url=moto_server.url, part_size=4 * MiB)
    async with S3ObjectStore.open(s3_settings) as store:
        (listed,) = await store.list_objects(S3Location(BUCKET, key.rsplit("/", 1)[0]))
        # Someone overwrites the object after syncd listed it: every ranged GET carries
        # IfMatch with the listed ETag, so no part of the new version can be mixed in.
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=os.urandom(9 * MiB))
        downloader = Downloader(s3_settings, OneStore(store), sleep=no_sleep)
        try:
            with pytest.raises(ObjectChangedError):
                await downloader.download(
                    S3Location(BUCKET, key), listed, tmp_path / "x", lambda _: None
                )
        finally:
            downloader.close()


@BOTH_READ_PATHS
async def test_object_replaced_mid_download_fails_on_if_match(
    faults: FaultyS3Proxy, s3_client: Any, tmp_path: Path, threaded_reads: bool
) -> None:
    """Replaced after the HEAD, while ranges are being read: If-Match makes the next one fail."""
    key = put(faults.url, os.urandom(12 * MiB), multipart=True)  # parts of 5, 5 and 2 MiB
    faults.faults.slow[key] = 0.02  # per 64 KiB: about 1.6 s per 5 MiB range
    s3_settings = S3Settings(
        endpoint_url=faults.url,
        part_size=5 * MiB,
        max_concurrency=1,  # one range at a time: the later ones start after the overwrite
        threaded_reads=threaded_reads,
    )
    async with downloading(s3_settings, key, tmp_path / "x") as (task, received):
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=os.urandom(12 * MiB))
        with pytest.raises(ObjectChangedError):
            await task
    assert sum(received.counts) < 12 * MiB  # nothing of the new version was taken as the old


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_cancelled_download_leaves_no_thread_reading(
    request: pytest.FixtureRequest, scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a download is cancelled, no pump thread is still reading once the await returns.

    The caller closes the file right after: a thread that outlived the await would write
    into a closed, or worse a reused, file descriptor. Over HTTPS too: the TCP socket under
    the TLS is shut down, so a thread waiting in `recv` returns at once.
    """
    proxy: FaultyS3Proxy = request.getfixturevalue("faults" if scheme == "http" else "https_faults")
    tls = {"ca_bundle": str(request.getfixturevalue("certificate")[0])} if scheme == "https" else {}
    inside = threads_reading(monkeypatch)
    key = put(request.getfixturevalue("moto_server").url, os.urandom(12 * MiB), multipart=True)
    proxy.faults.slow[key] = 0.05  # a crawling link: the abort must not wait for it
    s3_settings = S3Settings(endpoint_url=proxy.url, part_size=4 * MiB, max_concurrency=4, **tls)
    async with downloading(s3_settings, key, tmp_path / "x") as (task, received):
        assert inside["now"] > 0  # ranges are being read by threads right now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert inside["now"] == 0
        assert sum(received.counts) == 0  # what was reported is taken back


async def test_threaded_read_refused_by_the_server_falls_back_to_aiobotocore(
    faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    """A presigned GET refused outright (a region redirect, say) is read through aiobotocore."""
    data = os.urandom(9 * MiB)
    key = put(faults.url, data, multipart=True)
    faults.faults.refuse_presigned[key] = -1
    metrics = Metrics()
    entry = await download(faults.url, key, tmp_path / "x", metrics)
    assert (tmp_path / "x").read_bytes() == data
    assert entry.verified_by == "crc32-composite"
    # A refusal is no transient failure: nothing was counted as retried.
    assert (
        metrics.registry.get_sample_value("syncd_request_retries_total", {"reason": "other"}) == 0
    )
    assert sum(1 for _, range_ in faults.faults.ranges if range_) >= 2 * 2  # each range twice


@pytest.mark.parametrize(
    ("size", "checksum"),
    [
        (8 * MiB, "when_supported"),  # exactly the threshold: a one-part multipart upload
        (8 * MiB, "when_required"),  # the same with no checksum: a "-1" multipart ETag
        (8 * MiB - 1, "when_supported"),  # one byte under: a single PUT
        (8 * MiB + 1, "when_supported"),  # one byte over: two parts, the last of one byte
        (16 * MiB, "when_supported"),  # exactly two parts
    ],
)
async def test_part_boundaries_as_boto3_uploads_them(
    moto_server: Any, tmp_path: Path, size: int, checksum: str
) -> None:
    """Objects as MLflow's boto3 uploads them (8 MiB threshold and parts), at the boundaries
    where S3-compatible servers differ: each verifies, and the check used is recorded."""
    client = boto3.client(
        "s3",
        endpoint_url=moto_server.url,
        config=Config(request_checksum_calculation=checksum),  # type: ignore[arg-type]
    )
    key = f"boundaries/{uuid.uuid4().hex}/model.bin"
    data = os.urandom(size)
    client.upload_fileobj(
        io.BytesIO(data),
        BUCKET,
        key,
        Config=TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB),
    )
    settings = S3Settings(endpoint_url=moto_server.url, part_size=4 * MiB)
    entry, _ = await download_listed(settings, key, tmp_path / "model.bin")
    assert (tmp_path / "model.bin").read_bytes() == data
    assert entry.verified_by != "size"


class RecordingWriteback(Writeback):
    """Starts writeback like the real one and remembers which ranges it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[int, int]] = []

    def range_done(self, fd: int, offset: int, length: int) -> None:
        self.ranges.append((offset, offset + length))
        super().range_done(fd, offset, length)


@pytest.mark.parametrize("threaded", [True, False])
async def test_writeback_starts_as_each_range_lands(
    moto_server: Any, tmp_path: Path, threaded: bool
) -> None:
    data = os.urandom(13 * MiB + 5)
    key = put(moto_server.url, data, algorithm="CRC32")
    settings = S3Settings(
        endpoint_url=moto_server.url,
        part_size=4 * MiB,
        chunk_size=256 * 1024,
        threaded_reads=threaded,
    )
    writeback = RecordingWriteback()
    await download_listed(settings, key, tmp_path / "out.bin", writeback=writeback)
    # every range handed over once, covering the file exactly: the final flush finds the
    # pages already on their way to the disk
    assert sorted(writeback.ranges) == [
        (0, 4 * MiB),
        (4 * MiB, 8 * MiB),
        (8 * MiB, 12 * MiB),
        (12 * MiB, len(data)),
    ]
    assert writeback.requested == (4 if sync_file_range_write else 0)
    assert (tmp_path / "out.bin").read_bytes() == data


@pytest.mark.parametrize(
    ("algorithm", "multipart", "direct_writes", "direct_files"),
    [
        ("CRC32", False, True, 1),  # hashed as the bytes pass
        (None, True, True, 1),  # MD5 per upload part: as they pass too
        (None, False, True, 1),  # one MD5 of the whole object: read back direct
        ("CRC32", False, False, 0),  # s3.direct_writes: false
    ],
)
async def test_ranges_skip_the_page_cache_where_the_filesystem_takes_it(
    moto_server: Any,
    tmp_path: Path,
    algorithm: str | None,
    multipart: bool,
    direct_writes: bool,
    direct_files: int,
) -> None:
    if filesystem_type(os.stat(tmp_path).st_dev) not in ("ext4", "xfs"):
        pytest.skip("direct writes are taken on ext4 and xfs only")
    data = os.urandom(13 * MiB + 5)  # a tail that is no whole block
    key = put(moto_server.url, data, algorithm=algorithm, multipart=multipart)
    settings = S3Settings(
        endpoint_url=moto_server.url, part_size=5 * MiB, direct_writes=direct_writes
    )
    entry, downloader = await download_listed(settings, key, tmp_path / "out.bin")
    assert downloader.direct_files == direct_files
    assert (tmp_path / "out.bin").read_bytes() == data
    assert entry.verified_by != "size"
