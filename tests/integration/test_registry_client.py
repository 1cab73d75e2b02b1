"""syncd's REST reads of the registry: what MLflow's client would send, without importing it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from syncd.app.embedded import MlflowServer
from syncd.app.runtime import open_runtime
from syncd.errors import RegistryError
from syncd.remote.mlflow_rest import needs_mlflow_client
from tests.support.cli import WAIT, clean_env, sync_command
from tests.support.models import publish, unique_name
from tests.support.runtime import make_settings

ADMIN, PASSWORD = "admin", "syncd-test-admin-7Qx"  # the admin this test gives basic_auth.ini


class AuthMlflowServer(MlflowServer):
    """`mlflow server --app-name basic-auth`: every request needs a user."""

    def command(self) -> list[str]:
        return [*super().command(), "--app-name", "basic-auth"]


@pytest.fixture(scope="module")
def auth_server(moto_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    logs = tmp_path_factory.mktemp("auth-mlflow")
    server = AuthMlflowServer(
        logs,
        moto_server.url,
        name="auth-mlflow",
        extra_env={
            "MLFLOW_AUTH_CONFIG_PATH": str(_auth_config(logs)),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "syncd-tests-only",
        },
    )
    server.start()
    yield server
    server.stop()


def _auth_config(folder: Path) -> Path:
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'users.sqlite'}\n"
        f"admin_username = {ADMIN}\nadmin_password = {PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return config


async def test_basic_auth_is_sent_as_mlflow_sends_it(
    auth_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    name = unique_name("auth")
    MlflowClient(auth_server.url).create_registered_model(name)
    async with open_runtime(make_settings(auth_server.url, mlflow={"client": "rest"})) as runtime:
        assert await runtime.registry.get_model(name) is not None
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    async with open_runtime(make_settings(auth_server.url, mlflow={"client": "rest"})) as runtime:
        with pytest.raises(RegistryError, match="not authenticated"):
            await runtime.registry.get_model(name)


def test_a_one_shot_sync_never_imports_mlflow(
    mlflow_server: Any, moto_server: Any, tmp_path: Path
) -> None:
    import subprocess

    name = unique_name("noimport")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    command = sync_command(name, tmp_path / "root")
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)
    done = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "syncd.remote.mlflow_rest" in imported
    assert not {module for module in imported if module.split(".")[0] == "mlflow"}
    # The stores are loaded by scheme: an S3 model loads no cloud SDK it does not read.
    assert "syncd.remote.s3.store" in imported
    assert not {module for module in imported if module.split(".")[0] in ("azure", "google")}
    assert not {"syncd.remote.azure", "syncd.remote.gcs"} & imported


def test_an_auth_variable_or_plugin_hands_the_registry_to_mlflows_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert needs_mlflow_client({}) is None
    assert needs_mlflow_client({"MLFLOW_TRACKING_AUTH": "oidc"}) == "MLFLOW_TRACKING_AUTH=oidc"
    # An installed plugin, as pip leaves one: a dist-info with its entry points.
    info = tmp_path / "acme_mlflow_auth-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-mlflow-auth\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[mlflow.request_header_provider]\nacme = acme_mlflow_auth:Provider\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert needs_mlflow_client({}) == "mlflow.request_header_provider plugin acme"
    assert sys.path[0] == str(tmp_path)
