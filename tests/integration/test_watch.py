"""The watcher on a real filesystem: swaps and deletions as syncd makes them, no dead thread."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import pytest

from syncd.local.swap import exchange_paths
from syncd.local.watch import RootWatcher
from tests.support.daemon import eventually

RUN_ID = "a" * 32


async def test_repairs_swapped_in_keep_the_watcher_alive_and_seeing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "llm-models"
    staging = root / ".syncd" / "staging"
    staging.mkdir(parents=True)
    seen: list[str] = []
    watcher = RootWatcher(
        [root], lambda _root, run_id: seen.append(run_id), asyncio.get_running_loop()
    )
    watcher.start()
    try:
        folder = root / RUN_ID
        for attempt in range(12):
            # Build in staging, then publish the way syncd does: rename, or swap and delete.
            build = staging / f"{RUN_ID}.{attempt}"
            build.mkdir()
            for index in range(3):
                (build / f"shard-{index}").write_bytes(b"x" * 1000)
            if folder.exists():
                assert exchange_paths(build, folder)
                shutil.rmtree(build)
            else:
                os.rename(build, folder)
            await eventually(lambda: RUN_ID in seen, f"publication {attempt} seen")
            await asyncio.sleep(0.05)  # let the root event re-arm the folder's watch
            seen.clear()
            (folder / "shard-1").unlink()  # what a careless person does to the new copy
            await eventually(lambda: RUN_ID in seen, f"deletion after publication {attempt}")
            seen.clear()
        assert not watcher.ensure_running()  # never had to be replaced
        assert watcher.restarts == 0
    finally:
        watcher.stop()
    assert "watcher thread failed" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
