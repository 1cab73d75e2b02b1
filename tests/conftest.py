"""Session-wide real servers: moto (S3) and `mlflow server` (sqlite), started once on port 0."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from syncd.app.embedded import MlflowServer, MotoServer
from tests.support.disk import mounted_small_disk
from tests.support.fake_domino import FakeDomino
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.tls import self_signed

BUCKET = "mlflow"
_KEEP = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "TERM", "CI"}
_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "GIT_PYTHON_REFRESH": "quiet",
}


def pytest_configure(config: pytest.Config) -> None:
    # Isolate from the developer's AWS/MLflow setup before any server or client starts: no
    # test may reach a real account or pick up a stray SYNCD_ variable.
    for name in list(os.environ):
        if name.startswith(("AWS_", "MLFLOW_", "SYNCD_")) and name not in _KEEP:
            del os.environ[name]
    os.environ.update(_FAKE_AWS)


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def moto_server(server_logs: Path) -> Iterator[MotoServer]:
    server = MotoServer(server_logs)
    server.start()
    boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket=BUCKET)
    os.environ["MLFLOW_S3_ENDPOINT_URL"] = server.url
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_client(moto_server: MotoServer):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=moto_server.url)


@pytest.fixture(scope="session")
def mlflow_server(moto_server: MotoServer, server_logs: Path) -> Iterator[MlflowServer]:
    """Runs record s3:// artifact URIs; clients read and write S3 directly.

    Webhooks may target loopback over http (MLflow allows only public https by default), and
    the webhook list is cached for 1 s instead of 60 so a webhook a test creates fires at once.
    """
    server = MlflowServer(
        server_logs,
        moto_server.url,
        default_artifact_root=f"s3://{BUCKET}/artifacts",
        extra_env={
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_CACHE_TTL": "1",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": "c3luY2Qtd2ViaG9vay10ZXN0cy1vbmx5LWtleS0zMmI=",
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, mlflow_server: MlflowServer) -> pytest.MonkeyPatch:
    """The environment a user's shell has: MLFLOW_TRACKING_URI pointing at the test server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    return monkeypatch


@pytest.fixture(scope="session")
def proxied_mlflow_server(moto_server: MotoServer, server_logs: Path) -> Iterator[MlflowServer]:
    """`--serve-artifacts`: runs record mlflow-artifacts:/ URIs, as Domino's do."""
    server = MlflowServer(
        server_logs,
        moto_server.url,
        artifacts_destination=f"s3://{BUCKET}/proxied",
        name="mlflow-proxied",
    )
    server.start()
    yield server
    server.stop()


def _serving(proxy: FaultyS3Proxy) -> Iterator[FaultyS3Proxy]:
    proxy.start()
    yield proxy
    proxy.stop()


def _reset(proxy: FaultyS3Proxy) -> Iterator[FaultyS3Proxy]:
    proxy.faults.reset()
    yield proxy
    proxy.faults.reset()


@pytest.fixture(scope="session")
def faulty_proxy(moto_server: MotoServer) -> Iterator[FaultyS3Proxy]:
    yield from _serving(FaultyS3Proxy(moto_server.url))


@pytest.fixture
def faults(faulty_proxy: FaultyS3Proxy) -> Iterator[FaultyS3Proxy]:
    yield from _reset(faulty_proxy)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def https_proxy(moto_server: MotoServer, certificate: tuple[Path, Path]) -> Iterator[FaultyS3Proxy]:
    """moto behind HTTPS (the fault proxy serving TLS): real S3 is HTTPS."""
    yield from _serving(FaultyS3Proxy(moto_server.url, tls=certificate))


@pytest.fixture
def https_faults(https_proxy: FaultyS3Proxy) -> Iterator[FaultyS3Proxy]:
    yield from _reset(https_proxy)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs to fill (root only; skipped elsewhere with the reason)."""
    yield from mounted_small_disk(tmp_path)


@pytest.fixture
def domino() -> Iterator[FakeDomino]:
    """The Domino API, faked in the shapes its own clients show (tests/support/fake_domino.py)."""
    fake = FakeDomino()
    fake.start()
    yield fake
    fake.stop()
