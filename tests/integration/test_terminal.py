"""A source gone from S3 behind syncd's back: the folder's key is parked as terminal, logged
once, never hammered by the polls and sweeps; SIGHUP (an operator) asks once more."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUCKET
from tests.integration.test_heal import heal_settings
from tests.support.daemon import WAIT, eventually, fetch, more_passes, running
from tests.support.models import publish, unique_name


async def test_a_source_gone_from_s3_is_terminal_and_logged_once(
    mlflow_server: Any, s3_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique_name("gone")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root = tmp_path / "llm-models"
    settings = heal_settings(
        mlflow_server.url, root, name, sweep_interval="100ms", poll_interval="100ms"
    )
    async with running(settings) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix="artifacts/")["Contents"]
        for item in listed:
            if f"/{published.parent_run_id}/" in item["Key"]:
                s3_client.delete_object(Bucket=BUCKET, Key=item["Key"])
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="syncd.reconcile.daemon"):
            shutil.rmtree(root / published.parent_run_id)  # the folder must be rebuilt: cannot
            await eventually(
                lambda: any("failed" in r.getMessage() for r in caplog.records), "the failure"
            )
            await more_passes(daemon)
            failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
            assert len(failures) == 1, failures
            assert "not retried until the pointer moves or SIGHUP" in failures[0]
            status = json.loads((await fetch(url + "/api/status"))[1])
            (folder,) = status["targets"][0]["folders"]
            assert (folder["state"], folder["terminal"]) == ("failed", True)
            daemon.hangup()  # an operator asks again: one more attempt, no more
            await eventually(
                lambda: sum("failed" in r.getMessage() for r in caplog.records) == 2, "retried"
            )
            await more_passes(daemon)
            assert sum("failed" in r.getMessage() for r in caplog.records) == 2
