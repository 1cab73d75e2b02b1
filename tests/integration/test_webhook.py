"""MLflow's own webhook delivery wakes a daemon that would otherwise poll once an hour."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from syncd.app.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from syncd.settings import Settings
from tests.support.daemon import WAIT, eventually, running, sample
from tests.support.models import publish, unique_name
from tests.support.runtime import make_settings

SECRET = "webhook-secret-for-tests"


def only(tracking_uri: str, root: Path, model: str, **overrides: Any) -> Settings:
    """A daemon over one model name: the suite's MLflow server holds every test's models,
    and a target of `*` would sync each of them before the daemon is ready."""
    target = {"name": "prod", "root": str(root), "alias": "production", "models": [model]}
    return make_settings(tracking_uri, targets=[target], **overrides)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


async def test_alias_set_in_mlflow_is_synced_without_waiting_for_a_poll(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name("hook")
    published = publish(mlflow_server.url, tmp_path, name, alias=None, shard_mib=(1,))
    root = tmp_path / "llm-models"
    settings = only(
        mlflow_server.url,
        root,
        name,
        poll_interval="1h",  # only the webhook can bring the folder within the test
        http={"webhook_secret": SECRET},
    )
    client = MlflowClient(mlflow_server.url)
    async with running(settings) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        assert not (root / published.parent_run_id).exists()
        polls = sample(
            daemon.metrics, "syncd_registry_polls_total", target="prod", result="success"
        )
        requests = sample(daemon.metrics, "syncd_registry_requests_total")
        hook = client.create_webhook(
            name=f"syncd-{name}",
            url=f"{url}/webhooks/mlflow",
            events=["model_version_alias.created"],
            secret=SECRET,
        )
        try:
            await asyncio.sleep(1.5)  # MLflow caches its webhook list for 1 s in this suite
            client.set_registered_model_alias(name, "production", published.version)
            await eventually(
                lambda: (root / ".syncd/manifests" / f"{published.parent_run_id}.json").exists(),
                "the folder synced after MLflow's webhook",
            )
        finally:
            client.delete_webhook(hook.webhook_id)
        assert sample(daemon.metrics, "syncd_webhooks_total", result="accepted") >= 1
        assert sample(daemon.metrics, "syncd_webhooks_total", result="rejected") == 0
        # The delivery named the model: it alone was read (and its new version resolved), not
        # the whole registry. 1 model read + 4 resolution calls (version, child run, logged
        # model, parent run).
        assert (
            sample(daemon.metrics, "syncd_registry_polls_total", target="prod", result="success")
            == polls
        )
        assert sample(daemon.metrics, "syncd_registry_requests_total") - requests <= 5
        messages = [event.message for event in daemon.events if event.target == "webhook"]
        assert f"model_version_alias.created {name}@production -> {published.version}" in messages


async def test_unsigned_forged_and_stale_deliveries_are_refused(
    mlflow_server: Any, tmp_path: Path
) -> None:
    settings = only(
        mlflow_server.url, tmp_path / "r", unique_name("absent"), http={"webhook_secret": SECRET}
    )
    body = json.dumps({"entity": "model_version_alias", "action": "created", "data": {}}).encode()
    now = str(int(time.time()))
    async with running(settings) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        endpoint = f"{url}/webhooks/mlflow"
        cases = {
            "unsigned": {},
            "wrong secret": {
                SIGNATURE_HEADER: sign("guess", "d1", now, body),
                TIMESTAMP_HEADER: now,
                DELIVERY_HEADER: "d1",
            },
            "replayed an hour later": {
                SIGNATURE_HEADER: sign(SECRET, "d2", str(int(now) - 3600), body),
                TIMESTAMP_HEADER: str(int(now) - 3600),
                DELIVERY_HEADER: "d2",
            },
        }
        for case, headers in cases.items():
            assert await asyncio.to_thread(post, endpoint, body, headers) == 401, case
        assert sample(daemon.metrics, "syncd_webhooks_total", result="rejected") == len(cases)
        assert sample(daemon.metrics, "syncd_webhooks_total", result="accepted") == 0
        good = {SIGNATURE_HEADER: sign(SECRET, "d3", now, body), TIMESTAMP_HEADER: now}
        good[DELIVERY_HEADER] = "d3"
        assert await asyncio.to_thread(post, endpoint, body, good) == 200
        assert sample(daemon.metrics, "syncd_webhooks_total", result="accepted") == 1


async def test_webhooks_are_off_without_a_secret(mlflow_server: Any, tmp_path: Path) -> None:
    settings = only(mlflow_server.url, tmp_path / "r", unique_name("absent"))
    async with running(settings) as (daemon, url):
        status = await asyncio.to_thread(post, f"{url}/webhooks/mlflow", b"{}", {})
        assert status == 403
        assert sample(daemon.metrics, "syncd_webhooks_total", result="rejected") == 1


def post_chunked(url: str, size: int) -> int:
    """A body sent in chunks, with no Content-Length for the server to check up front."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        chunks = (b"x" * (64 * 1024) for _ in range(size // (64 * 1024)))
        connection.request(
            "POST",
            parts.path,
            body=chunks,
            encode_chunked=True,
            headers={"Content-Type": "application/json"},
        )
        return connection.getresponse().status
    except (ConnectionError, http.client.HTTPException):
        return 0  # the server may close the connection on an oversized body
    finally:
        connection.close()


async def test_every_refused_delivery_is_counted(mlflow_server: Any, tmp_path: Path) -> None:
    settings = only(
        mlflow_server.url, tmp_path / "r", unique_name("absent"), http={"webhook_secret": SECRET}
    )
    async with running(settings) as (daemon, url):
        endpoint = f"{url}/webhooks/mlflow"
        statuses = [
            await asyncio.to_thread(post, endpoint, b"x" * (2 << 20), {}),  # stated too large
            await asyncio.to_thread(post_chunked, endpoint, 2 << 20),  # too large, chunked
            await asyncio.to_thread(post, endpoint, b"{}", {}),  # unsigned
        ]
        assert statuses[0] == 413
        assert statuses[1] in (413, 0)
        assert statuses[2] == 401
        assert sample(daemon.metrics, "syncd_webhooks_total", result="rejected") == 3
