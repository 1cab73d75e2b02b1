"""Micro-measurements behind figures quoted in the README and in code comments.

    python -m tests.bench.micro

Hash throughput (CRC32C by awscrt, CRC32 by zlib, MD5), the event-loop cost of a presigned URL
(botocore's `generate_presigned_url` against syncd's `UrlSigner`, offline: no server is asked),
and start-up imports with the garbage collector on and off (fresh processes, median of 5).
Run it with the interpreter of a `pip install .` virtualenv (the benchmark keeps one in
~/.cache/syncd-bench-syncd) for the figures users get: the dev venv's full `mlflow` imports more.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from awscrt import checksums

from syncd.remote.s3.presign import UrlSigner

_BLOCK = 1 << 20
_IMPORTS = (
    "import syncd.app.cli, syncd.app.runtime, syncd.reconcile.syncer, syncd.remote.registry\n"
    "from mlflow.tracking import MlflowClient\n"
)


def throughput(update: Callable[[memoryview], object], data: bytes) -> float:
    view = memoryview(data)
    started = time.perf_counter()
    for offset in range(0, len(data), _BLOCK):
        update(view[offset : offset + _BLOCK])
    return len(data) / (time.perf_counter() - started) / 1e9


def hashes() -> None:
    data = os.urandom(256 << 20)
    md5 = hashlib.md5(usedforsecurity=False)
    for name, update in (
        ("crc32c (awscrt)", lambda block: checksums.crc32c(block)),
        ("crc32 (zlib)", lambda block: zlib.crc32(block)),
        ("md5 (hashlib)", md5.update),
    ):
        print(f"{name:18} {throughput(update, data):5.1f} GB/s")


async def presigning(count: int = 2000) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "micro")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "micro")
    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        config=AioConfig(signature_version="s3v4"),
    ) as client:
        signer = UrlSigner(client, session, "us-east-1")
        started = time.perf_counter()
        for index in range(count):
            await client.generate_presigned_url(
                "get_object", Params={"Bucket": "b", "Key": f"k/{index}"}, ExpiresIn=3600
            )
        full = (time.perf_counter() - started) / count * 1000
        started = time.perf_counter()
        for index in range(count):
            await signer.url("b", f"k/{index}", 3600, checksums=True)
        fast = (time.perf_counter() - started) / count * 1000
    print(f"presigned URL      botocore {full:.3f} ms, UrlSigner {fast:.3f} ms")


def imports(rounds: int = 5) -> None:
    for label, prefix in (("gc on", ""), ("gc off, frozen", "import gc; gc.disable()\n")):
        code = (
            f"import time; t = time.perf_counter()\n{prefix}{_IMPORTS}"
            "print(time.perf_counter() - t)"
        )
        runs = [
            float(
                subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(rounds)
        ]
        print(f"imports, {label:14} {statistics.median(runs):.3f} s (median of {rounds})")


if __name__ == "__main__":
    hashes()
    asyncio.run(presigning())
    imports()
