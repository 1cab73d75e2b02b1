"""Registry cost at scale, counted by proxies in front of the real MLflow server and S3.

An idle poll over a few hundred models is one MLflow request and no S3 request; a restart with
every folder in place asks nothing but that listing; a moved alias costs only its own
resolution; a promotion to a pre-staged version downloads nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.support.daemon import WAIT, eventually, running, sample
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.models import publish, seed_models, unique_name
from tests.support.runtime import make_settings

MODELS = 150


@pytest.fixture(scope="module")
def mlflow_proxy(mlflow_server: Any) -> Iterator[FaultyS3Proxy]:
    """A plain forwarder in front of MLflow that counts every request."""
    proxy = FaultyS3Proxy(mlflow_server.url)
    proxy.start()
    yield proxy
    proxy.stop()


def mlflow_calls(proxy: FaultyS3Proxy) -> dict[str, int]:
    return {k: v for k, v in proxy.faults.requests.items() if "/api/" in k}


async def test_idle_polls_and_restarts_cost_one_listing(
    mlflow_server: Any,
    mlflow_proxy: FaultyS3Proxy,
    faults: FaultyS3Proxy,
    s3_client: Any,
    tmp_path: Path,
) -> None:
    prefix = unique_name("fleet")
    parents = seed_models(mlflow_server.url, s3_client, prefix, MODELS)
    root = tmp_path / "llm-models"
    settings = make_settings(
        mlflow_proxy.url,
        targets=[
            {"name": "prod", "root": str(root), "alias": "production", "models": [f"{prefix}-*"]}
        ],
        s3={"endpoint_url": faults.url},
        sweep_interval="1h",
        remote_check_interval="1h",
    )
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        assert all((root / run_id / "config.json").is_file() for run_id in parents.values())
        first_pass = sum(mlflow_calls(mlflow_proxy).values())
        # 1 listing + 4 calls per new version (version, child run, logged model or none, parent)
        assert first_pass <= 1 + 4 * MODELS
        mlflow_proxy.faults.reset()
        faults.faults.reset()
        for _ in range(3):
            await daemon.poll_once()
        calls = mlflow_calls(mlflow_proxy)
        assert sum(calls.values()) == 3, calls  # one search page per poll
        assert set(calls) == {"GET /api/2.0/mlflow/registered-models/search"}
        assert sum(faults.faults.requests.values()) == 0, faults.faults.requests
        assert sample(daemon.metrics, "syncd_syncs_total", target="prod", result="success") == (
            MODELS
        )

    # A restart with every folder in place: the listing, then nothing (resolutions were kept).
    mlflow_proxy.faults.reset()
    faults.faults.reset()
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        assert sum(mlflow_calls(mlflow_proxy).values()) == 1
        assert sum(faults.faults.requests.values()) == 0, faults.faults.requests
        states = {f.state for f in daemon.folders.values()}
        assert states == {"synced"}
        assert len(daemon.folders) == MODELS

        # One alias moves: its resolution and its folder, nothing for the others.
        name = f"{prefix}-0007"
        moved = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
        mlflow_proxy.faults.reset()
        faults.faults.reset()
        await daemon.poll_once()
        await eventually(lambda: (root / moved.parent_run_id).is_dir(), "the moved alias synced")
        assert sum(mlflow_calls(mlflow_proxy).values()) <= 1 + 4
        others = [k for k in faults.faults.gets if moved.parent_run_id not in k]
        assert len(others) == 1, others  # the new version's model_context.json, nothing else
        await eventually(
            lambda: (
                sample(daemon.metrics, "syncd_alias_to_ready_seconds_count", target="prod") == 1
            ),
            "the alias-to-ready latency observed",
        )


async def test_promotion_to_a_prestaged_version_downloads_nothing(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    name = unique_name("staged")
    current = publish(mlflow_server.url, tmp_path / "a", name, shard_mib=(2,))
    candidate = publish(mlflow_server.url, tmp_path / "b", name, alias="staging", shard_mib=(2,))
    root = tmp_path / "llm-models"
    settings = make_settings(
        mlflow_server.url,
        targets=[
            {
                "name": "prod",
                "root": str(root),
                "alias": "production",
                "prefetch": ["staging"],
                "models": [name],
            }
        ],
        s3={"endpoint_url": faults.url},
    )
    async with running(settings) as (daemon, _url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        assert (root / current.parent_run_id).is_dir()
        staged = root / candidate.parent_run_id
        assert staged.is_dir()  # pre-staged ahead of the promotion
        roles = {f.run_id: f.role for f in daemon.folders.values()}
        assert roles == {current.parent_run_id: "serving", candidate.parent_run_id: "prefetch"}
        # Pre-staged versions are not "wanted for serving".
        assert (
            sample(
                daemon.metrics,
                "syncd_desired_info",
                target="prod",
                model=name,
                alias="staging",
                version=candidate.version,
                run_id=candidate.parent_run_id,
            )
            == 0
        )
        inode = (staged / "config.json").stat().st_ino
        downloaded = sample(daemon.metrics, "syncd_downloaded_bytes_total")
        faults.faults.reset()
        MlflowClient(mlflow_server.url).set_registered_model_alias(
            name, "production", candidate.version
        )
        await daemon.poll_once()
        await eventually(
            lambda: (
                daemon.folders.get(_key(daemon, candidate.parent_run_id)) is not None
                and daemon.folders[_key(daemon, candidate.parent_run_id)].state == "synced"
                and daemon.folders[_key(daemon, candidate.parent_run_id)].role == "serving"
            ),
            "the promoted version in place for serving",
        )
        assert sample(daemon.metrics, "syncd_downloaded_bytes_total") == downloaded
        assert faults.faults.gets == {}  # not one object read: no bytes, not even a context
        assert (staged / "config.json").stat().st_ino == inode  # not re-published
        assert (
            sample(
                daemon.metrics,
                "syncd_desired_info",
                target="prod",
                model=name,
                alias="production",
                version=candidate.version,
                run_id=candidate.parent_run_id,
            )
            == 1
        )


def _key(daemon: Any, run_id: str) -> Any:
    return next((k for k in daemon.folders if k.run_id == run_id), None)
