"""Resolution rules against a real `mlflow server` (sqlite backend, S3 artifacts on moto)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from syncd.app.runtime import Runtime, open_runtime
from syncd.core.desired import DesiredState
from syncd.errors import RegistryError, ResolutionError
from syncd.settings import TargetSettings
from tests.support.models import publish, publish_without_context, unique_name
from tests.support.runtime import make_settings


@pytest.fixture(autouse=True, params=["rest", "mlflow"])
def registry_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every rule holds through syncd's REST reads and through MLflow's own client."""
    monkeypatch.setenv("SYNCD_MLFLOW__CLIENT", request.param)
    return str(request.param)


async def wanted_now(runtime: Runtime, settings: TargetSettings) -> DesiredState:
    """A target's desired state from a fresh listing, as one poll takes it."""
    registry = runtime.registry
    return await registry.wanted(settings, await registry.list_models())


def target(models: list[str], **kwargs: Any) -> TargetSettings:
    fields: dict[str, Any] = {"name": "prod", "root": Path("/unused"), "models": models}
    fields.update(kwargs or {"alias": "production"})
    return TargetSettings(**fields)


@pytest.mark.parametrize("layout", ["mlflow3", "mlflow2"])
async def test_context_resolves_to_the_parent_run(
    mlflow_server: Any, tmp_path: Path, layout: str
) -> None:
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name, layout=layout, shard_mib=(1,))  # type: ignore[arg-type]
    source = MlflowClient(mlflow_server.url).get_model_version(name, published.version).source
    assert source.startswith("models:/m-" if layout == "mlflow3" else "s3://")
    async with open_runtime(make_settings(mlflow_server.url)) as runtime:
        state = await wanted_now(runtime, target([name]))
    (desired,) = state.models
    assert state.errors == {}
    assert desired.run_id == published.parent_run_id
    assert desired.basis == "model_context"
    assert desired.ref.version == published.version
    assert desired.source_uri.endswith(f"/{published.parent_run_id}/artifacts/model")


async def test_stage_and_globs(mlflow_server: Any, tmp_path: Path) -> None:
    prefix = unique_name("glob")
    first = publish(mlflow_server.url, tmp_path, f"{prefix}-a", alias=None, shard_mib=(1,))
    second = publish(mlflow_server.url, tmp_path, f"{prefix}-b", alias=None, shard_mib=(1,))
    publish(mlflow_server.url, tmp_path, unique_name("other"), alias=None, shard_mib=(1,))
    client = MlflowClient(mlflow_server.url)
    client.transition_model_version_stage(f"{prefix}-a", first.version, "Production")
    client.transition_model_version_stage(f"{prefix}-b", second.version, "Staging")
    async with open_runtime(make_settings(mlflow_server.url)) as runtime:
        production = await wanted_now(runtime, target([f"{prefix}-*"], stage="Production"))
        staging = await wanted_now(runtime, target([f"{prefix}-?"], stage="Staging"))
    assert [d.model for d in production.models] == [f"{prefix}-a"]
    assert production.models[0].ref.selector == "stage Production"
    assert [d.run_id for d in staging.models] == [second.parent_run_id]


async def test_models_without_the_alias_are_not_wanted(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name()
    publish(mlflow_server.url, tmp_path, name, alias="staging", shard_mib=(1,))
    async with open_runtime(make_settings(mlflow_server.url)) as runtime:
        state = await wanted_now(runtime, target([name, unique_name("missing")]))
    assert state.models == []
    assert state.errors == {}


async def test_parent_tag_when_context_is_missing(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name()
    holder, _ = publish_without_context(mlflow_server.url, tmp_path, name, nested=True)
    async with open_runtime(make_settings(mlflow_server.url)) as runtime:
        (desired,) = (await wanted_now(runtime, target([name]))).models
    assert (desired.run_id, desired.basis) == (holder, "parent_tag")


async def test_version_run_when_nothing_else(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name()
    holder, _ = publish_without_context(mlflow_server.url, tmp_path, name, nested=False)
    async with open_runtime(make_settings(mlflow_server.url)) as runtime:
        (desired,) = (await wanted_now(runtime, target([name]))).models
    assert (desired.run_id, desired.basis) == (holder, "version_run")


async def test_foreign_parent_refused_unless_allowed(mlflow_server: Any, tmp_path: Path) -> None:
    victim = publish(mlflow_server.url, tmp_path, unique_name("victim"), alias=None, shard_mib=(1,))
    name = unique_name("thief")
    publish(mlflow_server.url, tmp_path, name, shard_mib=(1,), context_run_id=victim.parent_run_id)
    async with open_runtime(make_settings(mlflow_server.url)) as runtime:
        state = await wanted_now(runtime, target([name]))
    assert state.models == []
    error = state.errors[name]
    assert isinstance(error, ResolutionError)
    assert victim.parent_run_id in str(error)
    assert "foreign parent" in str(error)
    assert f"{name} version 1" in str(error)
    relaxed = make_settings(mlflow_server.url, resolution={"allow_foreign_parent": True})
    async with open_runtime(relaxed) as runtime:
        (desired,) = (await wanted_now(runtime, target([name]))).models
    assert desired.run_id == victim.parent_run_id


@pytest.mark.parametrize("bad", ["../../../etc", "0123456789ABCDEF0123456789ABCDEF"])
async def test_context_naming_a_non_run_id_refused(
    mlflow_server: Any, tmp_path: Path, bad: str
) -> None:
    name = unique_name()
    publish(mlflow_server.url, tmp_path, name, shard_mib=(1,), context_run_id=bad)
    async with open_runtime(make_settings(mlflow_server.url)) as runtime:
        state = await wanted_now(runtime, target([name]))
    assert state.models == []
    assert "is not a 32-hex run id" in str(state.errors[name])


async def test_one_broken_model_does_not_hide_the_others(
    mlflow_server: Any, tmp_path: Path
) -> None:
    prefix = unique_name("mixed")
    good = publish(mlflow_server.url, tmp_path, f"{prefix}-good", shard_mib=(1,))
    publish(mlflow_server.url, tmp_path, f"{prefix}-bad", shard_mib=(1,), context_run_id="nope")
    async with open_runtime(make_settings(mlflow_server.url)) as runtime:
        state = await wanted_now(runtime, target([f"{prefix}-*"]))
    assert [d.run_id for d in state.models] == [good.parent_run_id]
    assert list(state.errors) == [f"{prefix}-bad"]


async def test_deleted_parent_run_refused(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name, shard_mib=(1,))
    MlflowClient(mlflow_server.url).delete_run(published.parent_run_id)
    async with open_runtime(make_settings(mlflow_server.url)) as runtime:
        state = await wanted_now(runtime, target([name]))
    assert "is deleted" in str(state.errors[name])


async def test_registry_down_is_one_clear_error(moto_server: Any) -> None:
    from syncd.app.embedded import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    async with open_runtime(make_settings(dead)) as runtime:
        with pytest.raises(RegistryError) as caught:
            await wanted_now(runtime, target(["*"]))
    assert str(caught.value) == (
        f"MLflow at {dead}: search_registered_models: connection refused (is it running?)"
    )


def test_fluent_api_untouched_by_tests(mlflow_server: Any) -> None:
    # publish() sets the fluent tracking URI; make sure no run is left active between tests.
    assert mlflow.active_run() is None
