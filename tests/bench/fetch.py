"""syncd's one-shot sync of an S3 prefix into a dataset root, for the benchmark.

The same path as `syncd sync` (Syncer.ensure: listing, ranged verified download, staging,
manifest, atomic publish) minus the two registry calls that turn a model name into the prefix.
Usage: python -m tests.bench.fetch S3_URI ROOT RUN_ID size|checksum [threads|aio]
(`aio` streams ranged GETs through the event loop instead of pump threads, to compare the two)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from syncd.app.runtime import open_runtime
from syncd.core.desired import DesiredModel, ModelVersionRef
from syncd.local.store import LocalStore
from syncd.settings import load_settings


async def fetch(uri: str, root: Path, run_id: str, verify: str, reads: str = "threads") -> None:
    settings = load_settings(
        overrides={"s3": {"verify": verify, "threaded_reads": reads == "threads"}}
    )
    async with open_runtime(settings) as runtime:
        store = LocalStore(root)
        store.prepare()
        desired = DesiredModel(
            ModelVersionRef("bench", "1", "version 1"), run_id, "version_run", uri
        )
        outcome = await runtime.syncer.ensure(store, "bench", desired)
        checks = sorted({entry.verified_by for entry in outcome.manifest.files})
        print(f"{outcome.downloaded_files} files, {outcome.downloaded_bytes} bytes, {checks}")


if __name__ == "__main__":
    asyncio.run(fetch(sys.argv[1], Path(sys.argv[2]), sys.argv[3], *sys.argv[4:6]))
