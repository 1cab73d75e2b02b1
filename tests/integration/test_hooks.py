"""After-sync hooks against a fake Domino API (Domino cannot run here), a real webhook receiver
and real commands, driven by a real daemon over the real MLflow and S3 servers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.cli import clean_env, sync_command
from tests.support.daemon import WAIT, eventually, more_passes, running, sample
from tests.support.fake_domino import FakeDomino
from tests.support.layout import manifest_of
from tests.support.models import publish, unique_name
from tests.support.runtime import make_settings

SECRET = "hook-secret"


def hooks(domino: FakeDomino, model: str, out: Path, **restart: Any) -> list[dict[str, Any]]:
    script = (
        'test -f "$SYNCD_FOLDER/config.json" && '
        'echo "$SYNCD_TARGET $SYNCD_MODEL $SYNCD_VERSION $SYNCD_RUN_ID $SYNCD_FOLDER" >> "$0"'
    )
    return [
        {
            "domino_restart": {
                "model": model,
                "model_id": "m1",
                "model_version_id": "v1",
                "poll_interval": "50ms",
                **restart,
            }
        },
        {"webhook": {"url": f"{domino.url}/hook", "secret": SECRET}},
        {"command": ["sh", "-c", script, str(out)]},
    ]


def target(root: Path, models: list[str], after_sync: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "prod",
        "root": str(root),
        "alias": "production",
        "models": models,
        "after_sync": after_sync,
    }


def settings_for(mlflow_url: str, domino: FakeDomino, *targets: dict[str, Any]) -> Any:
    return make_settings(
        mlflow_url, targets=list(targets), domino={"api_host": domino.url, "api_key": "k3y"}
    )


def hook_count(daemon: Any, kind: str, result: str = "success") -> float:
    return sample(daemon.metrics, "syncd_hooks_total", target="prod", kind=kind, result=result)


async def test_alias_move_restarts_the_endpoint_once_after_the_folder_is_complete(
    mlflow_server: Any, domino: FakeDomino, tmp_path: Path
) -> None:
    name = unique_name("hooked")
    first = publish(mlflow_server.url, tmp_path / "a", name, shard_mib=(1,))
    root, out = tmp_path / "llm-models", tmp_path / "command.out"
    domino.add("m1", "v1")
    settings = settings_for(
        mlflow_server.url, domino, target(root, [name], hooks(domino, name, out))
    )
    async with running(settings) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        await eventually(lambda: hook_count(daemon, "command") == 1, "v1's hooks")
        second = publish(mlflow_server.url, tmp_path / "b", name, shard_mib=(1,))
        daemon.wake()
        await eventually(lambda: hook_count(daemon, "command") == 2, "v2's hooks")
        assert hook_count(daemon, "domino_restart") == 2
        assert hook_count(daemon, "webhook") == 2
        assert domino.state.name("m1", "v1") == "Running"
        # stop, status polls until stopped, start: each with the API key
        stops = domino.calls("/v4/models/m1/v1/stopModelDeployment")
        starts = domino.calls("/v4/models/m1/v1/startModelDeployment")
        assert (len(stops), len(starts)) == (2, 2)
        assert all(r.headers.get("X-Domino-Api-Key") == "k3y" for r in stops + starts)
        # the webhook: signed JSON about the folder
        posts = domino.calls("/hook")
        assert len(posts) == 2
        body = posts[-1].body
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert posts[-1].headers["X-Syncd-Signature"] == expected
        assert posts[-1].headers["X-Syncd-Timestamp"].isdigit()
        document = json.loads(body)
        assert (document["model"], document["version"], document["run_id"]) == (
            name,
            second.version,
            second.parent_run_id,
        )
        assert document["folder"] == str(root / second.parent_run_id)
        assert document["files"] == 4  # config, tokenizer, its config, one shard
        assert sum(document["verified_by"].values()) == 4
        # the command ran with the folder already complete, with the SYNCD_ variables
        lines = out.read_text().splitlines()
        assert lines == [
            f"prod {name} {first.version} {first.parent_run_id} {root / first.parent_run_id}",
            f"prod {name} {second.version} {second.parent_run_id} {root / second.parent_run_id}",
        ]
        status = json.loads(await _get(url + "/api/status"))
        (folder,) = status["targets"][0]["folders"]
        assert {h["kind"]: h["result"] for h in folder["hooks"]} == {
            "domino_restart": "success",
            "webhook": "success",
            "command": "success",
        }


async def test_heal_restart_and_unmapped_models_fire_what_they_should(
    mlflow_server: Any, domino: FakeDomino, tmp_path: Path
) -> None:
    mapped, unmapped = unique_name("mapped"), unique_name("other")
    publish(mlflow_server.url, tmp_path / "a", mapped, shard_mib=(1,))
    other = publish(mlflow_server.url, tmp_path / "b", unmapped, shard_mib=(1,))
    root, out = tmp_path / "llm-models", tmp_path / "command.out"
    domino.add("m1", "v1")
    domino.state.fail_next = 2  # the Domino API is busy at first: retried
    settings = settings_for(
        mlflow_server.url, domino, target(root, [mapped, unmapped], hooks(domino, mapped, out))
    )
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        await eventually(lambda: hook_count(daemon, "command") == 2, "both models' hooks")
        await eventually(lambda: hook_count(daemon, "domino_restart") == 1, "one restart")
        assert hook_count(daemon, "webhook") == 2
        # the restart was for the mapped model only, after the 503s
        assert len(domino.calls("/startModelDeployment")) == 1
        assert domino.state.name("m1", "v1") == "Running"
        requests = len(domino.state.requests)
        # A heal (a deleted file rebuilt) fires nothing.
        (root / other.parent_run_id / "config.json").unlink()
        await eventually(
            lambda: (
                sample(daemon.metrics, "syncd_heals_total", target="prod", reason="missing_file")
                == 1
            ),
            "the heal",
        )
        await more_passes(daemon)
        assert len(domino.state.requests) == requests
        assert hook_count(daemon, "command") == 2
    # A daemon restart with everything in place fires nothing either.
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        await more_passes(daemon)
        assert hook_count(daemon, "command") == 0
        assert len(domino.state.requests) == requests
    assert len(out.read_text().splitlines()) == 2


async def test_a_failing_hook_is_reported_and_the_folder_stays(
    mlflow_server: Any, domino: FakeDomino, tmp_path: Path
) -> None:
    name = unique_name("failing")
    published = publish(mlflow_server.url, tmp_path / "a", name, shard_mib=(1,))
    root = tmp_path / "llm-models"
    failing = [{"command": ["sh", "-c", "echo nope >&2; exit 3"], "attempts": 2}]
    settings = settings_for(mlflow_server.url, domino, target(root, [name], failing))
    async with running(settings) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        await eventually(lambda: hook_count(daemon, "command", "error") == 1, "the failure")
        assert (root / published.parent_run_id / "config.json").is_file()
        status = json.loads(await _get(url + "/api/status"))
        (folder,) = status["targets"][0]["folders"]
        assert folder["state"] == "synced"
        (hook,) = folder["hooks"]
        assert (hook["result"], hook["attempts"]) == ("error", 2)
        assert "exited with 3" in hook["detail"]
        assert "command ok" not in await _get(url + "/")


def test_sync_after_sync_runs_the_hooks_once(
    mlflow_server: Any, domino: FakeDomino, tmp_path: Path
) -> None:
    name = unique_name("oneshot")
    publish(mlflow_server.url, tmp_path / "a", name, shard_mib=(1,))
    root, out = tmp_path / "llm-models", tmp_path / "command.out"
    config = tmp_path / "syncd.yaml"
    config.write_text(json.dumps({"targets": [target(root, [name], hooks(domino, "x", out))]}))
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url, DOMINO_API_HOST=domino.url)
    command = sync_command(name, root, "--config", str(config), "--after-sync")
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WAIT)
    assert first.returncode == 0, first.stderr
    assert "after_sync webhook: success" in first.stderr
    assert "domino_restart" not in first.stderr  # mapped to another model
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WAIT)
    assert again.returncode == 0
    assert "already ran" in again.stderr
    assert len(out.read_text().splitlines()) == 1


async def _get(url: str) -> str:
    from tests.support.daemon import fetch

    return (await fetch(url))[1]


def _set_alias(tracking_uri: str, name: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri).set_registered_model_alias(name, "production", version)


async def test_a_rollback_to_a_kept_version_restarts_once_more_and_a_heal_keeps_the_record(
    mlflow_server: Any, domino: FakeDomino, tmp_path: Path
) -> None:
    name = unique_name("rollback")
    first = publish(mlflow_server.url, tmp_path / "a", name, shard_mib=(1,))
    root, out = tmp_path / "llm-models", tmp_path / "command.out"
    domino.add("m1", "v1")
    settings = settings_for(
        mlflow_server.url, domino, target(root, [name], hooks(domino, name, out))
    )
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        await eventually(lambda: hook_count(daemon, "domino_restart") == 1, "v1's restart")
        # a heal of v1 between two moves: its hook record survives the rebuilt manifest
        (root / first.parent_run_id / "config.json").unlink()
        await eventually(
            lambda: (
                sample(daemon.metrics, "syncd_heals_total", target="prod", reason="missing_file")
                == 1
            ),
            "the heal",
        )
        (record,) = manifest_of(root, first.parent_run_id).hooks
        assert (record.version, record.results[0].result) == (first.version, "success")
        second = publish(mlflow_server.url, tmp_path / "b", name, shard_mib=(1,))
        daemon.wake()
        await eventually(lambda: hook_count(daemon, "domino_restart") == 2, "v2's restart")
        # back to v1, whose folder is kept: no bytes, one more restart
        downloaded = sample(daemon.metrics, "syncd_downloaded_files_total", target="prod")
        _set_alias(mlflow_server.url, name, first.version)
        daemon.wake()
        await eventually(lambda: hook_count(daemon, "domino_restart") == 3, "the rollback's")
        assert sample(daemon.metrics, "syncd_downloaded_files_total", target="prod") == downloaded
        await more_passes(daemon)  # more polls and sweeps: the same move fires nothing more
        assert hook_count(daemon, "domino_restart") == 3
    assert len(domino.calls("/startModelDeployment")) == 3
    lines = out.read_text().splitlines()
    assert [line.split()[2] for line in lines] == [first.version, second.version, first.version]
    # A daemon restart over the same root fires nothing: the newest move is already v1's.
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        await more_passes(daemon)
        assert hook_count(daemon, "domino_restart") == 0
    assert len(domino.calls("/startModelDeployment")) == 3


async def test_an_endpoint_left_stopped_is_loud(
    mlflow_server: Any, domino: FakeDomino, tmp_path: Path
) -> None:
    name = unique_name("stuck")
    publish(mlflow_server.url, tmp_path / "a", name, shard_mib=(1,))
    root = tmp_path / "llm-models"
    domino.add("m1", "v1")
    domino.state.starts_fail_build = True
    restart = {
        "domino_restart": {
            "model": name,
            "model_id": "m1",
            "model_version_id": "v1",
            "poll_interval": "20ms",
        },
        "attempts": 2,
    }
    settings = settings_for(mlflow_server.url, domino, target(root, [name], [restart]))
    async with running(settings) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        await eventually(lambda: hook_count(daemon, "domino_restart", "error") == 1, "failure")
        gauge = sample(
            daemon.metrics, "syncd_domino_endpoint_left_stopped", target="prod", endpoint="m1/v1"
        )
        assert gauge == 1
        status = json.loads(await _get(url + "/api/status"))
        assert "m1/v1" in status["targets"][0]["endpoints_left_stopped"]
        page = await _get(url + "/")
        assert "Domino endpoint m1/v1 is stopped" in page
        assert domino.state.name("m1", "v1") == "Failed"
