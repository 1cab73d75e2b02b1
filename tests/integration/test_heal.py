"""Self-healing on a real filesystem with real MLflow and S3 servers: watch, sweep, deep verify,
repair without downtime, retention, and one writer per root."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from syncd.app.cli import main
from syncd.app.embedded import free_port
from syncd.local.lock import RootLock
from tests.support.daemon import (
    eventually,
    fetch,
    get,
    running,
    sample,
    scraped,
    start_process,
    wait_until,
    write_config,
)
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.layout import manifest_of
from tests.support.models import publish, unique_name
from tests.support.runtime import make_settings

SHARD = "model-00001-of-00002.safetensors"
SMALL_SHARD = "model-00002-of-00002.safetensors"


def heal_settings(tracking_uri: str, root: Path, model: str, **overrides: Any):  # type: ignore[no-untyped-def]
    options: dict[str, Any] = {"sweep_interval": "1h", "watch": True}
    options.update(overrides)
    return make_settings(
        tracking_uri,
        targets=[{"name": "prod", "root": str(root), "alias": "production", "models": [model]}],
        **options,
    )


def heals(daemon: Any, reason: str) -> float:
    return sample(daemon.metrics, "syncd_heals_total", target="prod", reason=reason)


async def test_deleted_folder_comes_back_at_once(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name, shard_mib=(2,))
    root = tmp_path / "llm-models"
    # Polls and sweeps are an hour apart: only the watch can bring it back in this test.
    async with running(heal_settings(mlflow_server.url, root, name)) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), 120)
        folder = root / published.parent_run_id
        before = sorted(p.name for p in folder.iterdir())
        await asyncio.to_thread(__import__("shutil").rmtree, folder)
        await eventually(lambda: heals(daemon, "missing_folder") == len(before), "folder rebuilt")
        assert sorted(p.name for p in folder.iterdir()) == before


async def test_deleted_file_downloads_only_that_file(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name)
    root = tmp_path / "llm-models"
    settings = heal_settings(mlflow_server.url, root, name, s3={"endpoint_url": faults.url})
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), 120)
        folder = root / published.parent_run_id
        kept_inode = (folder / SHARD).stat().st_ino
        gets_before = dict(faults.faults.gets)
        (folder / SMALL_SHARD).unlink()
        await eventually(lambda: heals(daemon, "missing_file") == 1, "file restored")
        new_gets = {
            path: count - gets_before.get(path, 0)
            for path, count in faults.faults.gets.items()
            if count != gets_before.get(path, 0)
        }
        assert list(new_gets) == [next(p for p in new_gets if p.endswith(SMALL_SHARD))]
        assert (folder / SHARD).stat().st_ino == kept_inode  # linked, not fetched
        assert (folder / SMALL_SHARD).stat().st_size == 3 << 20


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
async def test_sweep_catches_what_no_event_reports(
    mlflow_server: Any, tmp_path: Path, damage: str
) -> None:
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name, shard_mib=(2,))
    root = tmp_path / "llm-models"
    # watch off: as on NFS, where another host's change raises no event here
    settings = heal_settings(mlflow_server.url, root, name, watch=False, sweep_interval="0.2s")
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), 120)
        target = root / published.parent_run_id / "model-00001-of-00001.safetensors"
        original = target.read_bytes()
        if damage == "truncate":
            os.truncate(target, 1000)
        else:
            with target.open("r+b") as handle:
                handle.seek(12345)
                handle.write(b"\x00" if original[12345] else b"\x01")
        reason = "size" if damage == "truncate" else "mtime"
        await eventually(lambda: heals(daemon, reason) == 1, f"{damage} repaired")
        assert target.read_bytes() == original


async def test_deep_verify_catches_silent_corruption(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name, shard_mib=(2,))
    root = tmp_path / "llm-models"
    settings = heal_settings(
        mlflow_server.url, root, name, watch=False, deep_verify_interval="0.3s"
    )
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), 120)
        target = root / published.parent_run_id / "model-00001-of-00001.safetensors"
        original = target.read_bytes()
        stat = target.stat()
        with target.open("r+b") as handle:  # bit rot: same size, same mtime, other bytes
            handle.seek(777)
            handle.write(bytes([original[777] ^ 0x10]))
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        await eventually(lambda: heals(daemon, "checksum") == 1, "silent corruption repaired")
        assert target.read_bytes() == original
        assert sample(daemon.metrics, "syncd_deep_verify_problems_total", target="prod") >= 1


async def test_readers_never_see_a_missing_file_during_repair(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name)
    root = tmp_path / "llm-models"
    settings = heal_settings(mlflow_server.url, root, name, s3={"endpoint_url": faults.url})
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), 120)
        folder = root / published.parent_run_id
        names = sorted(p.name for p in folder.iterdir())
        misses: list[str] = []
        reads = 0
        stop = threading.Event()

        def endpoint_like_reader() -> None:
            nonlocal reads
            while not stop.is_set():
                for file_name in names:
                    try:
                        with (folder / file_name).open("rb") as handle:
                            handle.read(16)
                        reads += 1
                    except FileNotFoundError:
                        misses.append(file_name)

        reader = threading.Thread(target=endpoint_like_reader)
        reader.start()
        try:
            faults.faults.delay_seconds = 0.01  # a repair that takes a while
            os.truncate(folder / SHARD, 10)  # damaged, but still there
            await eventually(lambda: heals(daemon, "size") == 1, "repair done")
        finally:
            stop.set()
            reader.join()
        assert misses == []
        assert reads > 100
        assert (folder / SHARD).stat().st_size == 12 << 20


async def test_retention_keeps_the_previous_and_never_touches_foreign_folders(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name()
    root = tmp_path / "llm-models"
    v1 = publish(mlflow_server.url, tmp_path, name, shard_mib=(1,))
    foreign = root / ("f" * 32)
    foreign.mkdir(parents=True)
    (foreign / "weights.bin").write_bytes(b"copied by hand")
    # a one-shot sync of another model: made by syncd, but not for this daemon's targets
    other = unique_name("oneshot")
    manual = publish(mlflow_server.url, tmp_path, other, shard_mib=(1,))
    args = ["sync", "--model", other, "--alias", "production", "--root", str(root)]
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server.url
    try:
        assert await asyncio.to_thread(main, [*args, "--no-progress"]) == 0
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    settings = heal_settings(mlflow_server.url, root, name, gc_grace="0.2s", keep_previous=1)
    async with running(settings) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), 120)
        v2 = publish(mlflow_server.url, tmp_path, name, shard_mib=(1,))
        daemon.wake()
        await eventually(
            lambda: (root / ".syncd/manifests" / f"{v2.parent_run_id}.json").exists(), "v2"
        )
        v3 = publish(mlflow_server.url, tmp_path, name, shard_mib=(1,))
        daemon.wake()
        await eventually(
            lambda: (root / ".syncd/manifests" / f"{v3.parent_run_id}.json").exists(), "v3"
        )
        await asyncio.sleep(0.3)  # past gc_grace for v1 (a wait, not an assertion on time)
        daemon.wake()
        await eventually(lambda: not (root / v1.parent_run_id).exists(), "v1 removed")
        assert (root / v2.parent_run_id).is_dir()  # kept for a fast rollback
        assert manifest_of(root, v2.parent_run_id).unwanted_since
        assert (root / v3.parent_run_id).is_dir()
        assert not (root / ".syncd/manifests" / f"{v1.parent_run_id}.json").exists()
        assert (foreign / "weights.bin").read_bytes() == b"copied by hand"
        assert (root / manual.parent_run_id).is_dir()
        assert sample(daemon.metrics, "syncd_removed_folders_total", target="prod") == 1
        assert sample(daemon.metrics, "syncd_foreign_folders", target="prod") == 1
        status = (await fetch(url + "/api/status"))[1]
        assert "f" * 32 in status
        # rolling back: the alias returns to v2, which is wanted again and nothing downloads
        from mlflow import MlflowClient

        MlflowClient(mlflow_server.url).set_registered_model_alias(name, "production", v2.version)
        daemon.wake()
        await eventually(
            lambda: manifest_of(root, v2.parent_run_id).unwanted_since is None, "rollback"
        )


def test_verify_command(
    mlflow_server: Any,
    s3_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name)
    root = tmp_path / "llm-models"
    assert (
        main(
            ["sync", "--model", name, "--alias", "production", "--root", str(root), "--no-progress"]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["verify", "--root", str(root)]) == 0
    assert "OK  5 files" in capsys.readouterr().out
    shard = root / published.parent_run_id / SHARD
    with shard.open("r+b") as handle:
        handle.seek(5 << 20)
        handle.write(b"rot")
    assert main(["verify", "--root", str(root), published.parent_run_id, "--rate", "64MiB"]) == 1
    # the 12 MiB shard was uploaded in 8 MiB parts, fetched as one range of both (16 MiB
    # ranges by default): the damage at 5 MiB lies in it
    assert f"DAMAGED: {SHARD} (checksum: bytes 0-12582911)" in capsys.readouterr().out
    # --remote: the source gained a file since the sync
    from mlflow import MlflowClient

    uri = MlflowClient(mlflow_server.url).get_run(published.parent_run_id).info.artifact_uri
    bucket, prefix = uri[len("s3://") :].split("/", 1)
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/model/extra.json", Body=b"{}")
    (root / published.parent_run_id / SHARD).unlink()
    assert main(["verify", "--root", str(root), "--remote"]) == 1
    out = capsys.readouterr().out
    assert "extra.json (source changed)" in out
    assert f"{SHARD} (missing)" in out


def test_one_shot_sync_does_not_write_a_locked_root(
    mlflow_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name, shard_mib=(1,))
    root = tmp_path / "llm-models"
    held = RootLock(root)
    assert held.try_acquire("syncd run")
    try:
        assert (
            main(
                [
                    "sync",
                    "--model",
                    name,
                    "--alias",
                    "production",
                    "--root",
                    str(root),
                    "--no-progress",
                    "--lock-timeout",
                    "0.3",
                ]
            )
            == 1
        )
        err = capsys.readouterr().err
        assert "is being written by syncd run on" in err
        assert f"pid {os.getpid()}" in err
        assert not (root / published.parent_run_id).exists()
    finally:
        held.release()
    assert (
        main(
            ["sync", "--model", name, "--alias", "production", "--root", str(root), "--no-progress"]
        )
        == 0
    )


def test_two_daemons_one_root_and_a_killed_writer_taken_over(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name()
    first = publish(mlflow_server.url, tmp_path, name, shard_mib=(12, 3))
    root = tmp_path / "llm-models"
    ports = [free_port(), free_port()]
    processes = []
    for index, port in enumerate(ports):
        config = write_config(
            tmp_path / f"syncd-{index}.yaml",
            {
                "poll_interval": "0.5s",
                "lock_retry_interval": "0.3s",
                "targets": [
                    {"name": "prod", "root": str(root), "alias": "production", "models": [name]}
                ],
                "http": {"host": "127.0.0.1", "port": port},
                "mlflow": {"tracking_uri": mlflow_server.url},
                "s3": {"endpoint_url": faults.url, "part_size": "4MiB"},
            },
        )
        processes.append(start_process(config, tmp_path / f"syncd-{index}.log"))
        if index == 0:
            wait_until(
                lambda: (
                    (root / ".syncd" / "lock").exists()
                    and get(f"http://127.0.0.1:{ports[0]}/healthz")[0] == 200
                ),
                "first up",
            )
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        wait_until(lambda: all(get(url + "/readyz")[0] == 200 for url in urls), "both ready")
        assert (root / first.parent_run_id).is_dir()
        metrics = [get(url + "/metrics")[1] for url in urls]
        held = [scraped(text, 'syncd_lock_held{target="prod"}') for text in metrics]
        assert sorted(held) == [0.0, 1.0]
        writer, standby = (0, 1) if held[0] == 1.0 else (1, 0)
        total = sum(p.stat().st_size for p in (root / first.parent_run_id).iterdir())
        assert scraped(metrics[writer], "syncd_downloaded_bytes_total") == total
        assert scraped(metrics[standby], "syncd_downloaded_bytes_total") == 0.0
        assert scraped(metrics[standby], 'syncd_lock_waits_total{target="prod"}') == 1.0
        assert get(urls[standby] + "/healthz")[0] == 200
        # a standby is not stuck: it says so instead of "syncing: 0 of 1 in place"
        code, text = get(urls[standby] + "/readyz")
        assert (code, text.split(":")[0]) == (200, "standby")
        # the writer dies mid-download of a new version: the standby takes over and finishes
        faults.faults.delay_seconds = 0.02
        second = publish(mlflow_server.url, tmp_path, name, shard_mib=(12, 3))
        staging = root / ".syncd" / "staging"
        wait_until(lambda: any(staging.iterdir()), "writer started the new version")
        processes[writer].send_signal(signal.SIGKILL)
        processes[writer].wait()
        faults.faults.delay_seconds = 0.0
        wait_until(
            lambda: (root / ".syncd/manifests" / f"{second.parent_run_id}.json").exists(),
            "taken over",
        )
        assert scraped(get(urls[standby] + "/metrics")[1], 'syncd_lock_held{target="prod"}') == 1.0
        assert sorted(p.name for p in (root / second.parent_run_id).iterdir()) == sorted(
            p.name for p in (root / first.parent_run_id).iterdir()
        )
        wait_until(lambda: list(staging.iterdir()) == [], "dead writer's staging cleared")
        log = (tmp_path / f"syncd-{standby}.log").read_text()
        assert "standing by" in log
        assert "took over the writer lock" in log
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


def test_a_killed_sync_resumes_without_refetching_finished_parts(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name, shard_mib=(24,))
    root = tmp_path / "llm-models"
    config = write_config(
        tmp_path / "syncd.yaml",
        {
            "targets": [
                {"name": "prod", "root": str(root), "alias": "production", "models": [name]}
            ],
            "http": {"enabled": False},
            "mlflow": {"tracking_uri": mlflow_server.url},
            "s3": {"endpoint_url": faults.url, "part_size": "4MiB", "max_concurrency": 2},
        },
    )
    shard = "model-00001-of-00001.safetensors"
    faults.faults.slow[shard] = 0.02
    first = start_process(config, tmp_path / "first.log")
    parts = root / ".syncd" / "parts" / published.parent_run_id
    try:
        # killed (no chance to clean up) once a few ranges are on disk and recorded
        wait_until(
            lambda: any(len(json.loads(p.read_text())["done"]) >= 2 for p in parts.glob("*.json")),
            "some parts done",
        )
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    (part_map,) = parts.glob("*.json")
    done = {(a, b) for a, b in json.loads(part_map.read_text())["done"]}
    assert not (root / published.parent_run_id).exists()
    faults.faults.slow.clear()
    faults.faults.ranges.clear()
    second = start_process(config, tmp_path / "second.log")
    try:
        wait_until(lambda: (root / published.parent_run_id / shard).exists(), "resumed sync")
    finally:
        second.terminate()
        second.wait(timeout=30)
    fetched = {header for path, header in faults.faults.ranges if path.endswith(shard) and header}
    skipped = {f"bytes={a}-{b - 1}" for a, b in done}
    assert fetched  # the rest was fetched...
    assert not fetched & skipped  # ...and nothing that was already on disk
    assert len(fetched) + len(skipped) == 3  # 24 MiB: ranges are the 8 MiB upload parts
    manifest = manifest_of(root, published.parent_run_id)
    assert {e.verified_by for e in manifest.files if e.path == shard} == {"crc32-composite"}
    assert not parts.exists()
    # and it said so, instead of a progress count starting from nothing
    assert "resuming an interrupted sync of run" in (tmp_path / "second.log").read_text()
    assert list((root / ".syncd" / "staging").iterdir()) == []
