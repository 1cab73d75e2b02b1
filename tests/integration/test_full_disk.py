"""A disk that fills during a download (another writer on the same volume): one clear line,
nothing partial published, the space released, and the daemon retrying until there is room.

Needs a small tmpfs: mounted here when the tests run as root with the right to mount, else
skipped with the reason.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

from tests.support.cli import clean_env, sync_command
from tests.support.daemon import WAIT, eventually, running, wait_until
from tests.support.disk import fill
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.models import publish, unique_name
from tests.support.runtime import make_settings


def building(root: Path) -> bool:
    staging = root / ".syncd" / "staging"
    return staging.is_dir() and any(p.is_dir() and any(p.iterdir()) for p in staging.iterdir())


def used_by_builds(root: Path) -> int:
    """Bytes in what a sync builds (staging, part maps, manifests); the lock file aside."""
    meta = root / ".syncd"
    folders = [meta / "staging", meta / "parts", meta / "manifests"]
    return sum(p.stat().st_size for f in folders for p in f.rglob("*") if p.is_file())


def test_one_shot_sync_on_a_disk_that_fills(
    mlflow_server: Any, faults: FaultyS3Proxy, small_disk: Path, tmp_path: Path
) -> None:
    name = unique_name("full")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(12, 3))
    faults.faults.slow["model-00001"] = 0.02  # long enough to fill the disk meanwhile
    root = small_disk / "llm-models"
    env = clean_env(
        MLFLOW_TRACKING_URI=mlflow_server.url,
        SYNCD_S3__ENDPOINT_URL=faults.url,
        SYNCD_S3__PART_SIZE="1MiB",
    )
    process = subprocess.Popen(
        sync_command(name, root),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: building(root) or process.poll() is not None, "the download started")
    filler = fill(small_disk)
    _, stderr = process.communicate(timeout=WAIT)
    assert process.returncode == 1, stderr
    lines = [line for line in stderr.strip().splitlines() if line.startswith("syncd:")]
    assert lines == [stderr.strip().splitlines()[-1]]
    assert "Traceback" not in stderr
    # Whichever write meets the full disk first (a file's preallocation, a part map, the
    # manifest), the line names the dataset root and the lack of space.
    assert lines[0].startswith("syncd: ")
    assert "no space left" in lines[0]
    assert str(root) in lines[0]
    assert not (root / published.parent_run_id).exists()  # nothing partial published
    filler.unlink()
    assert used_by_builds(root) == 0  # the failed build released its space


async def test_daemon_reports_a_full_disk_and_retries_until_there_is_room(
    mlflow_server: Any, faults: FaultyS3Proxy, small_disk: Path, tmp_path: Path
) -> None:
    name = unique_name("full")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(12, 3))
    faults.faults.slow["model-00001"] = 0.02
    root = small_disk / "llm-models"
    settings = make_settings(
        mlflow_server.url,
        targets=[{"name": "prod", "root": str(root), "alias": "production", "models": [name]}],
        s3={"endpoint_url": faults.url, "part_size": "1MiB"},
    )
    async with running(settings) as (daemon, _):
        await eventually(lambda: building(root), "the download started")
        filler = await asyncio.to_thread(fill, small_disk)
        await eventually(
            lambda: any(f.state == "failed" for f in daemon.folders.values()), "the failure"
        )
        (folder,) = daemon.folders.values()
        assert folder.error is not None
        assert "no space left" in folder.error
        assert "internal error" not in folder.error
        faults.faults.slow.clear()
        filler.unlink()  # room again: the backoff requeue finishes the job, no poll needed
        await eventually(lambda: (root / published.parent_run_id).is_dir(), "synced at last")
        await eventually(lambda: folder.state == "synced", "shown as in place")
