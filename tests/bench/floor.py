"""The floor: the simplest fast Python doing syncd's download, without syncd.

aiobotocore, 32 MiB ranges, 16 in flight across every object, `iter_chunks(1 MiB)` into
`os.pwrite` at the range's offset; no verification, no fsync, no registry. What syncd's data
path must come close to in CPU per byte (issue 17: size-only within 1.2x of this row).

    python -m tests.bench.floor ENDPOINT BUCKET PREFIX DEST
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiobotocore.session import get_session

RANGE = 32 << 20
CHUNK = 1 << 20
IN_FLIGHT = 16


async def main(endpoint: str, bucket: str, prefix: str, dest: Path) -> None:
    session = get_session()
    async with session.create_client("s3", endpoint_url=endpoint, region_name="us-east-1") as s3:
        objects = []
        async for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            objects += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
        limit = asyncio.Semaphore(IN_FLIGHT)

        async def part(key: str, fd: int, start: int, end: int) -> None:
            async with limit:
                response = await s3.get_object(
                    Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}"
                )
                offset = start
                async for chunk in response["Body"].iter_chunks(CHUNK):
                    os.pwrite(fd, chunk, offset)
                    offset += len(chunk)

        fds = []
        tasks = []
        for key, size in objects:
            path = dest / key[len(prefix) :].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            fds.append(fd)
            for start in range(0, max(size, 1), RANGE):
                if size:
                    tasks.append(part(key, fd, start, min(start + RANGE, size)))
        await asyncio.gather(*tasks)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    endpoint, bucket, prefix, dest = sys.argv[1:5]
    asyncio.run(main(endpoint, bucket, prefix, Path(dest)))
