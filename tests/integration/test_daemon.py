"""The reconciler in-process and as a real `syncd run` process, against the real servers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from syncd.app.embedded import free_port
from syncd.reconcile.daemon import Key, WorkQueue
from tests.support.daemon import WAIT, eventually, fetch, get, running, sample, write_config
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.models import publish, unique_name
from tests.support.runtime import make_settings


async def test_alias_move_brings_a_new_folder_and_leaves_the_old(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name()
    first = publish(mlflow_server.url, tmp_path, name, shard_mib=(5,))
    root = tmp_path / "llm-models"
    settings = make_settings(
        mlflow_server.url,
        targets=[{"name": "prod", "root": str(root), "alias": "production", "models": [name]}],
    )
    async with running(settings) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        old = root / first.parent_run_id
        assert old.is_dir()
        before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in old.iterdir()}
        second = publish(mlflow_server.url, tmp_path, name, alias="production", shard_mib=(2,))
        assert second.version == "2"
        daemon.wake()
        new = root / second.parent_run_id
        await eventually(
            lambda: (root / ".syncd/manifests" / f"{second.parent_run_id}.json").exists(),
            "v2 synced",
        )
        assert {p.name for p in new.iterdir()} == {p.name for p in old.iterdir()}
        assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in old.iterdir()} == before
        status = json.loads((await fetch(url + "/api/status"))[1])
        (folder,) = status["targets"][0]["folders"]
        assert (folder["version"], folder["run_id"], folder["state"]) == (
            "2",
            second.parent_run_id,
            "synced",
        )
        metrics = daemon.metrics
        assert (
            sample(
                metrics,
                "syncd_desired_info",
                target="prod",
                model=name,
                alias="production",
                version="2",
                run_id=second.parent_run_id,
            )
            == 1
        )
        assert (
            sample(
                metrics,
                "syncd_desired_info",
                target="prod",
                model=name,
                alias="production",
                version="1",
                run_id=first.parent_run_id,
            )
            == 0
        )


async def test_two_targets_a_broken_model_and_a_noop_pass(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    prefix = unique_name("fleet")
    good = publish(mlflow_server.url, tmp_path, f"{prefix}-good", shard_mib=(1,))
    corrupt = publish(mlflow_server.url, tmp_path, f"{prefix}-corrupt", shard_mib=(1,))
    publish(
        mlflow_server.url, tmp_path, f"{prefix}-refused", shard_mib=(1,), context_run_id="bogus"
    )
    staged = publish(
        mlflow_server.url, tmp_path, f"{prefix}-staged", alias="staging", shard_mib=(1,)
    )
    faults.faults.corrupt[corrupt.parent_run_id] = -1
    prod, staging = tmp_path / "prod", tmp_path / "staging"
    settings = make_settings(
        mlflow_server.url,
        targets=[
            {"name": "prod", "root": str(prod), "alias": "production", "models": [f"{prefix}-*"]},
            {
                "name": "staging",
                "root": str(staging),
                "alias": "staging",
                "models": [f"{prefix}-*"],
            },
        ],
        s3={"endpoint_url": faults.url},
    )
    async with running(settings) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        assert (prod / good.parent_run_id).is_dir()
        assert (staging / staged.parent_run_id).is_dir()
        assert not (prod / corrupt.parent_run_id).exists()
        status = json.loads((await fetch(url + "/api/status"))[1])
        prod_status = status["targets"][0]
        states = {f["model"]: f["state"] for f in prod_status["folders"]}
        assert states == {f"{prefix}-good": "synced", f"{prefix}-corrupt": "failed"}
        assert "mismatch" in next(
            f["error"] for f in prod_status["folders"] if f["state"] == "failed"
        )
        assert "not a 32-hex run id" in prod_status["unresolved"][f"{prefix}-refused"]
        metrics = daemon.metrics
        assert sample(metrics, "syncd_syncs_total", target="prod", result="success") == 1
        assert sample(metrics, "syncd_syncs_total", target="prod", result="error") == 1
        assert sample(metrics, "syncd_syncs_total", target="staging", result="success") == 1
        assert sample(metrics, "syncd_resolution_errors", target="prod") == 1
        assert sample(metrics, "syncd_last_success_timestamp_seconds", target="staging") > 0
        assert sample(metrics, "syncd_checksum_failures_total") >= 2
        # A second pass finds everything in place from the manifests alone: no S3 request for
        # the folders in place, no sync, nothing downloaded.
        downloaded = sample(metrics, "syncd_downloaded_bytes_total")
        good_requests = sum(v for k, v in faults.faults.gets.items() if good.parent_run_id in k)
        successes = sample(metrics, "syncd_syncs_total", target="staging", result="success")
        passes = daemon.passes
        daemon.wake()
        await eventually(lambda: daemon.passes > passes, "second pass")
        assert sum(v for k, v in faults.faults.gets.items() if good.parent_run_id in k) == (
            good_requests
        )
        assert sample(metrics, "syncd_syncs_total", target="staging", result="success") == (
            successes
        )
        assert sample(metrics, "syncd_syncs_total", target="staging", result="noop") == 0
        faults.faults.corrupt.clear()  # the broken source heals: the next pass syncs it
        daemon.wake()
        await eventually(
            lambda: (prod / corrupt.parent_run_id).is_dir(),
            "corrupt model synced after the fault ends",
        )
        assert sample(metrics, "syncd_downloaded_bytes_total") > downloaded


async def test_http_endpoints(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name()
    publish(mlflow_server.url, tmp_path, name, shard_mib=(1,))
    settings = make_settings(
        mlflow_server.url,
        targets=[
            {"name": "prod", "root": str(tmp_path / "r"), "alias": "production", "models": [name]}
        ],
    )
    async with running(settings) as (daemon, url):
        assert (await fetch(url + "/healthz"))[0] == 200
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        assert (await fetch(url + "/readyz"))[0] == 200
        code, text = await fetch(url + "/metrics")
        assert code == 200
        for name_ in (
            'syncd_syncs_total{result="success",target="prod"} 1.0',
            "syncd_sync_duration_seconds_bucket",
            "syncd_downloaded_bytes_total",
            'syncd_last_success_timestamp_seconds{target="prod"}',
            "syncd_build_info",
        ):
            assert name_ in text
        code, page = await fetch(url + "/")
        assert code == 200
        assert name in page
        assert 'href="metrics"' in page


def test_work_queue_deduplicates_and_rechecks() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        key, other = Key("t", "a" * 32), Key("t", "b" * 32)
        queue.add(key)
        queue.add(key)
        queue.add(other)
        assert len(queue) == 2
        got = await queue.get()
        assert got == key
        queue.add(key)  # while in progress: re-checked after, not run twice at once
        assert await queue.get() == other
        queue.done(other)
        queue.done(key)
        assert await queue.get() == key
        queue.done(key)
        await asyncio.wait_for(queue.join(), 1)

    asyncio.run(scenario())


def test_sigterm_mid_download_exits_cleanly(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name, shard_mib=(12, 3))
    faults.faults.delay_seconds = 0.05  # ~1.3 MB/s per stream: the sync takes a while
    root = tmp_path / "llm-models"
    port = free_port()
    config = write_config(
        tmp_path / "syncd.yaml",
        {
            "poll_interval": "1h",
            "targets": [
                {"name": "prod", "root": str(root), "alias": "production", "models": [name]}
            ],
            "http": {"host": "127.0.0.1", "port": port},
            "mlflow": {"tracking_uri": mlflow_server.url},
            "s3": {"endpoint_url": faults.url, "part_size": "4MiB"},
        },
    )
    env = dict(os.environ)
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd.app.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        staging = root / ".syncd" / "staging"
        deadline = time.monotonic() + WAIT
        while not (staging.is_dir() and any(staging.iterdir())):
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "the sync never started"
            time.sleep(0.05)
        code, _ = get(f"http://127.0.0.1:{port}/readyz")
        assert code == 503  # first pass still running
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output.decode()
    assert b"stopped" in output
    assert not (root / published.parent_run_id).exists()
    # what was fetched stays in staging for the next start to resume; nothing else
    assert [p.name for p in staging.iterdir()] == [f"{published.parent_run_id}.resume"]


def test_json_logs_are_one_object_per_line(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name()
    publish(mlflow_server.url, tmp_path, name, shard_mib=(1,))
    port = free_port()
    config = write_config(
        tmp_path / "syncd.yaml",
        {
            "log_format": "json",
            "targets": [
                {
                    "name": "prod",
                    "root": str(tmp_path / "r"),
                    "alias": "production",
                    "models": [name],
                }
            ],
            "http": {"host": "127.0.0.1", "port": port},
            "mlflow": {"tracking_uri": mlflow_server.url},
        },
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd.app.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + WAIT
        while get(f"http://127.0.0.1:{port}/readyz")[0] != 200:
            assert process.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
    lines = err.decode().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(
        r["logger"] == "syncd.reconcile.daemon" and "in place" in r["message"] for r in records
    )
    assert records[-1]["message"] == "stopped"


async def test_readiness_says_what_it_knows(mlflow_server: Any, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = make_settings(
        dead,
        targets=[
            {"name": "prod", "root": str(tmp_path / "a"), "alias": "production", "models": ["x"]}
        ],
        mlflow={"max_retries": 0},
    )
    async with running(unreachable) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        code, text = await fetch(url + "/readyz")
        assert code == 503
        assert text.startswith("registry_unreachable: could not reach the registry since ")
        assert "connection refused" in text
        page = (await fetch(url + "/"))[1]
        assert "could not reach the registry" in page
        assert "no model matching" not in page
        section = page.split("Recent events")[0]
        assert section.count("connection refused") == 1  # once, above the event history
        status = json.loads((await fetch(url + "/api/status"))[1])
        assert status["readiness"]["state"] == "registry_unreachable"
    nothing = make_settings(
        mlflow_server.url,
        targets=[
            {
                "name": "prod",
                "root": str(tmp_path / "b"),
                "alias": "production",
                "models": [unique_name("absent")],
            }
        ],
    )
    async with running(nothing) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        code, text = await fetch(url + "/readyz")
        assert (code, text.split(":")[0]) == (200, "nothing_matches")
        assert "has alias production" in (await fetch(url + "/"))[1]
