"""The domino_restart hook against a fake Domino that answers in Domino's own shapes
(see tests/support/fake_domino.py for where they come from)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from syncd.reconcile.hooks import HookEvent, HookRunner
from syncd.remote.domino import Deployment, parse_deployment
from syncd.settings import DominoRestartEntry, DominoSettings
from tests.support.fake_domino import FakeDomino

EVENT = HookEvent("prod", "llm", "3", "alias production", "a" * 32, "/x", 1, 1, 0.1, {})


def restart_hook(**restart: Any) -> DominoRestartEntry:
    return DominoRestartEntry.model_validate(
        {
            "domino_restart": {
                "model": "llm",
                "model_id": "m1",
                "poll_interval": "10ms",
                **restart,
            },
            "attempts": 3,
        }
    )


def runner(domino: FakeDomino, **settings: Any) -> HookRunner:
    base: dict[str, Any] = {"api_host": domino.url, "access_token_url": f"{domino.url}/nothing"}
    return HookRunner(DominoSettings.model_validate({**base, **settings}), backoff=0.01)


def sequence(domino: FakeDomino) -> list[str]:
    """The Model API calls in order, status polls answered with the state they saw collapsed."""
    calls = []
    for r in domino.state.requests:
        name = r.path.rsplit("/", 1)[-1] if r.method == "POST" else f"GET {r.path}"
        if not calls or calls[-1] != name:
            calls.append(name)
    return calls


async def test_a_restart_waits_for_stopped_then_for_running(domino: FakeDomino) -> None:
    domino.add("m1", "v1")
    hook = restart_hook(model_version_id="v1")
    (result,) = await runner(domino, api_key="k3y").run([hook], EVENT)
    assert result.result == "success", result.detail
    assert "Running" in result.detail
    status = "GET /models/m1/versions/v1/json"
    assert sequence(domino) == [
        "stopModelDeployment",
        status,
        "startModelDeployment",
        status,
    ]
    # it polled until the stop was no longer pending, and the start until Running
    polls = [r for r in domino.state.requests if r.path.endswith("/json")]
    assert len(polls) >= domino.state.polls_to_stop + domino.state.polls_to_start
    assert domino.state.name("m1", "v1") == "Running"
    assert all(r.headers.get("X-Domino-Api-Key") == "k3y" for r in domino.state.requests)


async def test_without_a_version_id_the_active_version_is_restarted(domino: FakeDomino) -> None:
    domino.add("m1", "old")
    domino.add("m1", "v7")  # made active last
    domino.add("m2", "v9")
    hook = restart_hook(project_id="p1")
    (result,) = await runner(domino, api_key="k").run([hook], EVENT)
    assert result.result == "success", result.detail
    lookups = domino.calls("/v4/modelManager/getModels")
    assert [r.query for r in lookups] == ["projectId=p1"]
    posts = [r.path for r in domino.state.requests if r.method == "POST"]
    assert posts == [
        "/v4/models/m1/v7/stopModelDeployment",
        "/v4/models/m1/v7/startModelDeployment",
    ]


async def test_the_project_comes_from_domino_project_id(
    domino: FakeDomino, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd.settings import load_settings

    domino.add("m1", "v2", project="proj-from-env")
    monkeypatch.setenv("DOMINO_PROJECT_ID", "proj-from-env")
    monkeypatch.setenv("DOMINO_API_HOST", domino.url)
    monkeypatch.setenv("DOMINO_USER_API_KEY", "legacy")
    settings = load_settings(
        overrides={
            "domino": {"access_token_url": f"{domino.url}/nothing"},
            "targets": [
                {
                    "name": "prod",
                    "root": "/tmp/never-used",
                    "alias": "production",
                    "models": ["llm"],
                    "after_sync": [restart_hook().model_dump(exclude_none=True)],
                }
            ],
        }
    )
    hooks = settings.targets[0].after_sync
    (result,) = await HookRunner(settings.domino, backoff=0.01).run(hooks, EVENT)
    assert result.result == "success", result.detail
    assert domino.calls("/v4/models/m1/v2/startModelDeployment")
    # no key in syncd's config, no token endpoint: the legacy key, last
    assert all(r.headers.get("X-Domino-Api-Key") == "legacy" for r in domino.calls("Deployment"))


def test_a_restart_without_version_or_project_is_refused() -> None:
    from syncd.errors import ConfigError
    from syncd.settings import load_settings

    with pytest.raises(ConfigError, match="project_id"):
        load_settings(
            overrides={
                "domino": {"api_host": "http://domino"},
                "targets": [
                    {
                        "name": "prod",
                        "root": "/tmp/x",
                        "alias": "production",
                        "models": ["llm"],
                        "after_sync": [{"domino_restart": {"model": "llm", "model_id": "m1"}}],
                    }
                ],
            }
        )


async def test_a_start_answered_503_is_retried_as_a_start(domino: FakeDomino) -> None:
    domino.add("m1", "v1")
    domino.state.fail_starts = 2
    (result,) = await runner(domino, api_key="k").run([restart_hook(model_version_id="v1")], EVENT)
    assert result.result == "success", result.detail
    assert len(domino.calls("/stopModelDeployment")) == 1  # never stopped again
    assert len(domino.calls("/startModelDeployment")) == 3
    assert domino.state.name("m1", "v1") == "Running"
    assert result.left_stopped is None


async def test_a_start_that_never_succeeds_is_reported_as_left_stopped(
    domino: FakeDomino, caplog: pytest.LogCaptureFixture
) -> None:
    domino.add("m1", "v1")
    domino.state.starts_fail_build = True
    hook = restart_hook(model_version_id="v1")
    with caplog.at_level(logging.ERROR, logger="syncd.reconcile.hooks"):
        (result,) = await runner(domino, api_key="k").run([hook], EVENT)
    assert result.result == "error"
    assert result.left_stopped == "m1/v1"
    assert "LEFT STOPPED" in result.detail
    assert "Failed" in result.detail
    assert len(domino.calls("/stopModelDeployment")) == 1
    assert len(domino.calls("/startModelDeployment")) == hook.attempts
    assert any("LEFT STOPPED" in r.getMessage() for r in caplog.records)


async def test_a_stop_that_fails_leaves_nothing_stopped(domino: FakeDomino) -> None:
    domino.add("m1", "v1")
    (result,) = await runner(domino, api_key="k").run(
        [restart_hook(model_version_id="nope")], EVENT
    )
    assert result.result == "error"
    assert result.left_stopped is None  # the stop was refused (404): nothing was stopped
    assert not domino.calls("/startModelDeployment")
    assert domino.state.name("m1", "v1") == "Running"


async def test_the_run_token_is_sent_as_a_bearer_token(domino: FakeDomino) -> None:
    domino.add("m1", "v1")
    domino.state.token = "run-token-1"
    hook = restart_hook(model_version_id="v1")
    domino_settings = {"access_token_url": f"{domino.url}/access-token", "user_api_key": "legacy"}
    (result,) = await runner(domino, **domino_settings).run([hook], EVENT)
    assert result.result == "success", result.detail
    api = [r for r in domino.state.requests if r.path != "/access-token"]
    assert all(r.headers.get("Authorization") == "Bearer run-token-1" for r in api)
    assert not any("X-Domino-Api-Key" in r.headers for r in api)
    # fetched afresh for each restart: a token that changed is the one sent next time
    domino.state.token = "run-token-2"
    await runner(domino, **domino_settings).run([hook], EVENT)
    assert domino.state.requests[-1].headers.get("Authorization") == "Bearer run-token-2"
    assert len(domino.calls("/access-token")) == 2


async def test_the_api_proxy_gets_no_credentials(domino: FakeDomino) -> None:
    domino.add("m1", "v1")
    domino.state.token = "run-token"
    settings = {
        "api_proxy": domino.url,
        "api_key": "k",
        "access_token_url": f"{domino.url}/access-token",
    }
    (result,) = await runner(domino, **settings).run([restart_hook(model_version_id="v1")], EVENT)
    assert result.result == "success", result.detail
    assert not domino.calls("/access-token")
    for r in domino.state.requests:
        assert "Authorization" not in r.headers
        assert "X-Domino-Api-Key" not in r.headers


async def test_a_configured_token_is_used_outside_a_run(domino: FakeDomino) -> None:
    domino.add("m1", "v1")
    (result,) = await runner(domino, api_token="sa-token").run(
        [restart_hook(model_version_id="v1")], EVENT
    )
    assert result.result == "success", result.detail
    assert domino.state.requests[-1].headers.get("Authorization") == "Bearer sa-token"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"result": {"deploymentStatus": {"name": "Stopped", "isPending": False}}}, (True, False)),
        ({"result": {"deploymentStatus": {"name": "Stopped", "isPending": True}}}, (False, False)),
        (
            {"result": {"deploymentStatus": {"name": "Ready to run", "isPending": False}}},
            (True, False),
        ),
        ({"result": {"deploymentStatus": {"name": "Running", "isPending": False}}}, (False, True)),
        ({"result": {"deploymentStatus": {"name": "Running", "isPending": True}}}, (False, False)),
        ({"result": {"deploymentStatus": {"name": "Building", "isPending": True}}}, (False, False)),
        ({"status": "Stopped"}, (True, False)),
        ({"data": {"deploymentStatus": "running"}}, (False, True)),
        ({"something": "else"}, (False, False)),
    ],
)
def test_deployment_status_in_every_shape(
    document: dict[str, Any], expected: tuple[bool, bool]
) -> None:
    deployment: Deployment = parse_deployment(document)
    assert (deployment.stopped, deployment.running) == expected
