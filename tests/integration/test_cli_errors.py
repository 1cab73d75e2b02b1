"""Every expected failure is one line on stderr and a non-zero exit, from the real `syncd`."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.app.embedded import free_port
from tests.support.cli import run_syncd
from tests.support.models import publish, unique_name


def syncd(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The command in a clean environment (no SYNCD_ or MLFLOW_ setting of the test run's)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "MLFLOW_"))}
    environment.update(env)
    return run_syncd(*args, env=environment, cwd=cwd)


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncd.yaml"
    path.write_text(text)
    return path


def test_run_on_a_busy_port_fails_before_polling(
    tmp_path: Path, busy_port: int, mlflow_server: Any
) -> None:
    path = config(
        tmp_path,
        f"targets: [{{name: prod, root: {tmp_path / 'r'}, alias: production, models: ['*']}}]\n"
        f"http: {{port: {busy_port}}}\n",
    )
    line = one_line(syncd("run", "--config", str(path), MLFLOW_TRACKING_URI=mlflow_server.url), 1)
    assert line == (
        f"syncd: port {busy_port} on 127.0.0.1 is already in use (another syncd, or Jupyter?): "
        "choose another with http.port"
    )
    assert not (tmp_path / "r").exists()  # nothing started, nothing created


def test_demo_on_a_busy_port_fails_before_starting_anything(busy_port: int) -> None:
    line = one_line(syncd("demo", "--once", "--port", str(busy_port)), 1)
    assert "already in use" in line
    assert "--port" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("demo", "--port", "99999"), "argument --port: port 99999 is outside 1-65535"),
        (("sync", "--model", "m", "--version", "abc", "--root", "x"), "not a model version"),
        (("verify", "--root", ".", "--rate", "bogus"), "argument --rate: not a size: 'bogus'"),
        (
            ("sync", "--model", "m", "--alias", "a", "--root", "x", "--lock-timeout", "-1"),
            "negative",
        ),
        (("status",), "the following arguments are required: --root"),
    ],
)
def test_bad_flag_values(args: tuple[str, ...], expected: str) -> None:
    assert expected in one_line(syncd(*args), 2)


def test_missing_and_empty_roots(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert one_line(syncd("status", "--root", str(missing)), 1) == (
        f"syncd: {missing} is missing: give the dataset folder that holds the run folders"
    )
    assert "is missing" in one_line(syncd("verify", "--root", str(missing)), 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert one_line(syncd("status", "--root", str(empty)), 0) == f"no run folders under {empty}"
    assert "not 32 lowercase hex" in one_line(syncd("verify", "--root", str(empty), "../x"), 1)


def test_no_tracking_uri_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    line = one_line(
        syncd("sync", "--model", "m", "--alias", "production", "--root", "r", cwd=tmp_path), 2
    )
    assert "set MLFLOW_TRACKING_URI" in line
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns/, no root
    line = one_line(
        syncd(
            "sync",
            "--model",
            "m",
            "--alias",
            "a",
            "--root",
            "r",
            cwd=tmp_path,
            MLFLOW_TRACKING_URI="sqlite:///mlflow.db",
        ),
        2,
    )
    assert line.startswith("syncd: config error: environment variable MLFLOW_TRACKING_URI:")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_registry_in_plain_words(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_line(
        syncd(
            "sync",
            "--model",
            "m",
            "--alias",
            "production",
            "--root",
            str(tmp_path / "r"),
            MLFLOW_TRACKING_URI=dead,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        ),
        1,
    )
    assert (
        line == f"syncd: MLflow at {dead}: registered model m: connection refused (is it running?)"
    )


def test_unknown_model_alias_and_version(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name()
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root = str(tmp_path / "r")
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MLFLOW_S3_ENDPOINT_URL": os.environ["MLFLOW_S3_ENDPOINT_URL"],
    }
    missing = unique_name("missing")
    line = one_line(
        syncd("sync", "--model", missing, "--alias", "production", "--root", root, **env), 1
    )
    assert line == f"syncd: {missing}: no registered model named {missing!r}"
    line = one_line(syncd("sync", "--model", name, "--alias", "nope", "--root", root, **env), 1)
    assert line == f"syncd: {name}: no alias 'nope' (aliases: production)"
    line = one_line(syncd("sync", "--model", name, "--version", "99", "--root", root, **env), 1)
    assert line == f"syncd: {name} version 99: no such registered model version"
    assert "?" not in line


def test_config_errors_name_the_key_and_its_source(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        "targets:\n  - name: prod\n    root: /tmp/x\n    alias: production\n    model: [a]\n",
    )
    line = one_line(syncd("run", "--config", str(path)), 2)
    assert f"{path}: targets.0.model: unknown key (did you mean 'models'?)" in line
    good = config(tmp_path, "targets: [{name: p, root: /tmp/x, alias: a, models: [m]}]\n")
    line = one_line(syncd("run", "--config", str(good), SYNCD_POLL_INTERVAL="abc"), 2)
    assert "environment variable SYNCD_POLL_INTERVAL: poll_interval: not a duration" in line


def test_a_root_that_is_a_file_and_s3_down_in_plain_words(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name()
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MLFLOW_S3_ENDPOINT_URL": os.environ["MLFLOW_S3_ENDPOINT_URL"],
    }
    plain = tmp_path / "llm-models"
    plain.write_text("not a folder")
    result = syncd("sync", "--model", name, "--alias", "production", "--root", str(plain), **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]  # after the line that says what resolved
    assert line == (
        f"syncd: {plain} is a file, not a folder: give the dataset folder that holds the run "
        "folders"
    )
    assert plain.read_text() == "not a folder"
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_line(
        syncd(
            "sync",
            *("--model", name, "--alias", "production", "--root", str(tmp_path / "r")),
            **{**env, "MLFLOW_S3_ENDPOINT_URL": dead, "SYNCD_S3__MAX_ATTEMPTS": "2"},
        ),
        1,
    )
    assert line.count("s3://") == 1, line  # the object named once, not three times
    assert "model_context.json" in line
    assert "(failed after 2 attempts)" in line
