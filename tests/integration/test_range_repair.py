"""Repairs fetch only the damaged ranges: real `syncd` processes and a real daemon against
moto behind the counting proxy; every GET the repair makes is counted, with its Range."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.test_heal import heal_settings, heals
from tests.support.cli import clean_env, sync_command
from tests.support.daemon import WAIT, eventually, running
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.layout import manifest_of
from tests.support.models import publish, unique_name

PART = 8 << 20  # the part size MLflow's boto3 uploads with: the ranges syncd fetches and records
BIG = "model-00001-of-00002.safetensors"
SMALL = "model-00002-of-00002.safetensors"


def sync(tracking_uri: str, s3_url: str, name: str, root: Path) -> subprocess.CompletedProcess[str]:
    # ranges of one upload part each (by default a GET takes two 8 MiB parts)
    env = clean_env(
        MLFLOW_TRACKING_URI=tracking_uri, SYNCD_S3__ENDPOINT_URL=s3_url, SYNCD_S3__PART_SIZE="8MiB"
    )
    return subprocess.run(
        sync_command(name, root), env=env, capture_output=True, text=True, timeout=WAIT, check=False
    )


def flip(path: Path, offset: int, *, keep_mtime: bool) -> None:
    before = path.stat()
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))
    if keep_mtime:  # bit rot: nothing `lstat` can see
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def ranges_fetched(faults: FaultyS3Proxy, run_id: str) -> list[tuple[str, str]]:
    """(file name, Range header) of each GET of the run's binaries (resolving the version reads
    the pyfunc run's model_context.json: not counted here)."""
    return [
        (path.rsplit("/", 1)[-1], header)
        for path, header in faults.faults.ranges
        if f"/{run_id}/" in path
    ]


def test_one_flipped_byte_costs_one_range(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name("ranges")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(40, 3))
    root = tmp_path / "llm-models"
    first = sync(mlflow_server.url, faults.url, name, root)
    assert first.returncode == 0, first.stderr
    folder = root / published.parent_run_id
    recorded = {entry.path: entry for entry in manifest_of(root, published.parent_run_id).files}
    assert [end for end, _ in recorded[BIG].range_crc32c] == [PART * n for n in (1, 2, 3, 4, 5)]
    original = (folder / BIG).read_bytes()
    small_inode = (folder / SMALL).stat().st_ino
    flip(folder / BIG, 2 * PART + 12345, keep_mtime=False)  # in the third range

    faults.faults.reset()
    second = sync(mlflow_server.url, faults.url, name, root)

    assert second.returncode == 0, second.stderr
    # One ranged GET for the 8 MiB range holding the flipped byte; of the 43 MiB, nothing else.
    assert ranges_fetched(faults, published.parent_run_id) == [
        (BIG, f"bytes={2 * PART}-{3 * PART - 1}")
    ]
    assert (folder / BIG).read_bytes() == original
    assert (folder / SMALL).stat().st_ino == small_inode  # untouched files stay linked
    assert "1 patched" in second.stderr
    healed = manifest_of(root, published.parent_run_id)
    assert {e.path: e.range_crc32c for e in healed.files} == {
        e.path: e.range_crc32c for e in recorded.values()
    }
    # and it is in place: a third run fetches nothing
    faults.faults.reset()
    assert sync(mlflow_server.url, faults.url, name, root).returncode == 0
    assert ranges_fetched(faults, published.parent_run_id) == []


def test_a_touched_but_intact_file_is_not_fetched(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name("touched")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(12, 3))
    root = tmp_path / "llm-models"
    assert sync(mlflow_server.url, faults.url, name, root).returncode == 0
    shard = root / published.parent_run_id / BIG
    os.utime(shard)  # `touch`: another mtime, the same bytes
    faults.faults.reset()
    result = sync(mlflow_server.url, faults.url, name, root)
    assert result.returncode == 0, result.stderr
    assert ranges_fetched(faults, published.parent_run_id) == []
    entry = next(e for e in manifest_of(root, published.parent_run_id).files if e.path == BIG)
    assert entry.mtime_ns == shard.stat().st_mtime_ns  # the manifest learnt the new mtime


def test_a_range_that_comes_back_wrong_is_fetched_whole(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name("badrange")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(24, 3))
    root = tmp_path / "llm-models"
    assert sync(mlflow_server.url, faults.url, name, root).returncode == 0
    shard = root / published.parent_run_id / BIG
    original = shard.read_bytes()
    flip(shard, 100, keep_mtime=False)
    faults.faults.reset()
    faults.faults.corrupt[BIG] = 1  # the repair's GET is corrupted on the way
    result = sync(mlflow_server.url, faults.url, name, root)
    assert result.returncode == 0, result.stderr
    assert "crc32c mismatch" in result.stderr
    assert "downloading the whole file" in result.stderr
    fetched = ranges_fetched(faults, published.parent_run_id)
    assert fetched[0] == (BIG, f"bytes=0-{PART - 1}")
    assert len(fetched) == 1 + 3  # then the whole file, range by range
    assert shard.read_bytes() == original


async def test_deep_verify_repairs_bit_rot_range_by_range(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name("rot")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(24, 3))
    root = tmp_path / "llm-models"
    settings = heal_settings(
        mlflow_server.url,
        root,
        name,
        watch=False,
        deep_verify_interval="0.5s",
        s3={"endpoint_url": faults.url, "part_size": PART},
    )
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), 120)
        shard = root / published.parent_run_id / BIG
        original = shard.read_bytes()
        faults.faults.reset()
        flip(shard, PART + 7, keep_mtime=True)
        flip(shard, 2 * PART - 1, keep_mtime=True)  # two bytes, the same (second) range
        await eventually(lambda: heals(daemon, "checksum") == 1, "bit rot repaired")
        assert ranges_fetched(faults, published.parent_run_id) == [
            (BIG, f"bytes={PART}-{2 * PART - 1}")
        ]
        assert shard.read_bytes() == original
