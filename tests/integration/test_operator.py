"""An operator's second day, on the real process: a config mistake is one line, `/metrics`
carries no `_created` doubles, and MLflow's telemetry stays off."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from syncd.app.embedded import free_port
from tests.support.cli import clean_env, run_sync, run_syncd
from tests.support.daemon import daemon_config, get, start_process, stop_process, wait_until
from tests.support.models import publish, unique_name


@pytest.mark.parametrize(
    ("variable", "named"),
    [
        ("SYNCD_S3__ENDPOINT_URL", "environment variable SYNCD_S3__ENDPOINT_URL: s3.endpoint_url"),
        ("MLFLOW_S3_ENDPOINT_URL", "environment variable MLFLOW_S3_ENDPOINT_URL: s3.endpoint_url"),
        ("config", "syncd.yaml: s3.endpoint_url"),
    ],
)
def test_an_endpoint_without_a_scheme_is_one_line_and_exit_2(
    tmp_path: Path, variable: str, named: str
) -> None:
    env = clean_env(MLFLOW_TRACKING_URI="http://127.0.0.1:1")
    env.pop("MLFLOW_S3_ENDPOINT_URL", None)
    extra: list[str] = []
    if variable == "config":
        config = tmp_path / "syncd.yaml"
        config.write_text("s3:\n  endpoint_url: 127.0.0.1:9100\n")
        extra = ["--config", str(config)]
    else:
        env[variable] = "127.0.0.1:9100"
    result = run_sync("any", tmp_path / "root", env, *extra)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "http://127.0.0.1:9100" in lines[0]  # what to write instead
    assert not (tmp_path / "root").exists()


def test_metrics_have_no_created_series(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name("created")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(tmp_path, root, port, name, mlflow_server.url)
    process = start_process(config, tmp_path / "syncd.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: get(url + "/readyz")[0] == 200, "ready")
        text = get(url + "/metrics")[1]
    finally:
        stop_process(process)
    assert "syncd_syncs_total" in text
    assert "_created" not in text


def test_mlflow_telemetry_is_off_in_syncd_processes(mlflow_server: Any, tmp_path: Path) -> None:
    """Outside CI (MLflow turns it off there itself) a client would write an installation id
    under XDG_CONFIG_HOME and report usage; syncd's processes do neither."""
    name = unique_name("telemetry")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    config_home = tmp_path / "xdg"
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url, XDG_CONFIG_HOME=str(config_home))
    for variable in ("CI", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY"):
        env.pop(variable, None)
    assert run_sync(name, tmp_path / "root", env).returncode == 0
    assert run_syncd("status", "--root", str(tmp_path / "root"), env=env).returncode == 0
    assert not (config_home / "mlflow" / "telemetry.json").exists()
    assert not os.path.exists(config_home / "mlflow")
