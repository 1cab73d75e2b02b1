"""Azure Blob and GCS, end to end: MLflow servers whose artifact roots are `wasbs://` and
`gs://` (on Azurite and gcp-storage-emulator), models published in the seed's pattern by
MLflow's own artifact clients, and the real `syncd` process syncing, verifying, repairing
and fetching them, with a counting proxy in front of each emulator."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncd.app.embedded import MlflowServer
from syncd.errors import SourceError
from syncd.publish import publish_model
from syncd.remote.azure import parse as parse_azure_uri
from syncd.remote.small import SMALL_FILE_LIMIT
from tests.integration.test_range_repair import flip
from tests.support.cli import clean_env, run_sync, run_syncd
from tests.support.daemon import eventually, running
from tests.support.emulators import Azurite, GcsEmulator
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.layout import manifest_of
from tests.support.models import model_folder, unique_name
from tests.support.runtime import make_settings

CONTAINER = "models"
BUCKET = "models"
SHARD = "model-00001-of-00002.safetensors"  # 12 MiB: ranged GETs of 8 MiB


@dataclass
class Cloud:
    """One cloud's emulator behind a counting proxy, and an MLflow server whose runs keep
    their artifacts there."""

    name: str
    mlflow: MlflowServer
    proxy: FaultyS3Proxy
    publish_env: dict[str, str]  # what MLflow's artifact client needs (the emulator itself)
    syncd_env: dict[str, str]  # what syncd is given (the proxy in front of it)
    artifact_root: str

    def env(self, **extra: str) -> dict[str, str]:
        return (
            clean_env(
                MLFLOW_TRACKING_URI=self.mlflow.url, SYNCD_S3__PART_SIZE="8MiB", **self.syncd_env
            )
            | extra
        )


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    from azure.storage.blob import BlobServiceClient

    logs = tmp_path_factory.mktemp("azure")
    with Azurite(logs) as azurite:
        BlobServiceClient.from_connection_string(azurite.connection_string).create_container(
            CONTAINER
        )
        proxy = FaultyS3Proxy(azurite.url, keep_host=True)
        proxy.start()
        through_proxy = azurite.connection_string.replace(azurite.url, proxy.url)
        root = f"wasbs://{CONTAINER}@devstoreaccount1.blob.core.windows.net/mlartifacts"
        with MlflowServer(logs, "http://unused", default_artifact_root=root) as server:
            yield Cloud(
                "azure",
                server,
                proxy,
                {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
                {"AZURE_STORAGE_CONNECTION_STRING": through_proxy},
                root,
            )
        proxy.stop()


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    logs = tmp_path_factory.mktemp("gcs")
    with GcsEmulator(logs, BUCKET) as emulator:
        proxy = FaultyS3Proxy(emulator.url)
        proxy.start()
        root = f"gs://{BUCKET}/mlartifacts"
        with MlflowServer(logs, "http://unused", default_artifact_root=root) as server:
            yield Cloud(
                "gcs",
                server,
                proxy,
                {"STORAGE_EMULATOR_HOST": emulator.url},
                {"STORAGE_EMULATOR_HOST": proxy.url},
                root,
            )
        proxy.stop()


@pytest.fixture(params=["azure", "gcs"])
def cloud(request: pytest.FixtureRequest) -> Cloud:
    found: Cloud = request.getfixturevalue(request.param)
    return found


@dataclass
class Model:
    name: str
    parent_run_id: str
    folder: Path  # what was published


def published(cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Model:
    """A model in the seed's pattern, logged by MLflow's own artifact client for that cloud."""
    for key, value in cloud.publish_env.items():
        monkeypatch.setenv(key, value)
    name = unique_name(cloud.name)
    folder = model_folder(tmp_path)
    done = publish_model(cloud.mlflow.url, name, folder, alias="production")
    return Model(name, done.parent_run_id, folder)


def fetched(proxy: FaultyS3Proxy, run_id: str) -> dict[str, int]:
    """Body bytes the proxy forwarded per file of the run's binaries (GCS's metadata reads,
    `/storage/v1/...` without `alt=media`, are not file bytes)."""
    return {
        path.rsplit("/", 1)[-1]: count
        for path, count in proxy.faults.body_bytes.items()
        if f"/{run_id}/" in path and not path.startswith("/storage/v1/")
    }


def test_a_model_in_the_cloud_store_syncs_verified_and_repairs_by_range(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = published(cloud, tmp_path, monkeypatch)
    root = tmp_path / "llm-models"

    first = run_sync(model.name, root, cloud.env())

    assert first.returncode == 0, first.stderr
    folder = root / model.parent_run_id
    source = model.folder
    for path in sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file()):
        assert (folder / path).read_bytes() == (source / path).read_bytes(), path
    manifest = manifest_of(root, model.parent_run_id)
    assert manifest.source_uri.startswith(cloud.artifact_root)
    checks = {entry.verified_by for entry in manifest.files}
    # Azure: Content-MD5 of each blob MLflow put in one request; GCS: the CRC32C of each.
    assert checks == ({"md5"} if cloud.name == "azure" else {"crc32c"}), manifest.files
    verified = run_syncd("verify", "--root", str(root), "--remote", env=cloud.env())
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # One flipped byte in the 12 MiB shard, its mtime changed: one 8 MiB range fetched again
    # where ranges carry CRCs (GCS, and Azure, whose ranges were recorded by CRC32C as well).
    flip(folder / SHARD, 123, keep_mtime=False)
    (folder / "config.json").unlink()
    cloud.proxy.faults.reset()

    second = run_sync(model.name, root, cloud.env())

    assert second.returncode == 0, second.stderr
    assert (folder / SHARD).read_bytes() == (source / SHARD).read_bytes()
    assert (folder / "config.json").read_bytes() == (source / "config.json").read_bytes()
    assert fetched(cloud.proxy, model.parent_run_id) == {
        SHARD: 8 << 20,
        "config.json": (source / "config.json").stat().st_size,
    }
    assert "1 patched by range" in second.stderr


def test_a_new_version_fetches_only_the_file_that_changed(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are known by the checksum the store states (Azure's Content-MD5, GCS's CRC32C),
    not by the version token, which a new upload of the same bytes changes."""
    from mlflow import MlflowClient

    first = published(cloud, tmp_path, monkeypatch)
    root = tmp_path / "llm-models"
    assert run_sync(first.name, root, cloud.env()).returncode == 0
    changed = "model-00002-of-00002.safetensors"
    (first.folder / changed).write_bytes(os.urandom(3 << 20))
    second = publish_model(cloud.mlflow.url, first.name, first.folder)
    MlflowClient(cloud.mlflow.url).set_registered_model_alias(
        first.name, "production", second.version
    )
    cloud.proxy.faults.reset()

    result = run_sync(first.name, root, cloud.env())

    assert result.returncode == 0, result.stderr
    assert fetched(cloud.proxy, second.parent_run_id) == {changed: 3 << 20}
    assert f"4 reused from run {first.parent_run_id}" in result.stderr
    new = root / second.parent_run_id
    assert (new / SHARD).stat().st_ino == (root / first.parent_run_id / SHARD).stat().st_ino


def test_a_blob_without_content_md5_is_size_checked_and_says_why(
    azure: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob with no Content-MD5 (Azure keeps none for one committed from blocks, as uploads
    over 64 MiB are; Azurite computes one anyway, so it is cleared here, as Set Blob
    Properties without it does) has its size checked, and the manifest says why."""
    from azure.storage.blob import BlobServiceClient, ContentSettings

    model = published(azure, tmp_path, monkeypatch)
    where = parse_azure_uri(model_source(azure, model))
    client = BlobServiceClient.from_connection_string(
        azure.publish_env["AZURE_STORAGE_CONNECTION_STRING"]
    ).get_blob_client(where.container, f"{where.prefix}/extra.bin")
    data = os.urandom(10 << 20)  # ranged: its facts come from the blob's properties
    client.upload_blob(data)
    client.set_http_headers(ContentSettings(content_type="application/octet-stream"))
    assert client.get_blob_properties().content_settings.content_md5 is None
    root = tmp_path / "llm-models"

    result = run_sync(model.name, root, azure.env())

    assert result.returncode == 0, result.stderr
    entries = {entry.path: entry for entry in manifest_of(root, model.parent_run_id).files}
    assert entries["extra.bin"].verified_by == "size"
    assert "Content-MD5" in entries["extra.bin"].note
    assert (root / model.parent_run_id / "extra.bin").read_bytes() == data


def model_source(cloud: Cloud, model: Model) -> str:
    """The artifact URI of the run holding the binaries (`syncd sync` records it)."""
    from mlflow import MlflowClient

    run = MlflowClient(cloud.mlflow.url).get_run(model.parent_run_id)
    return f"{run.info.artifact_uri}/{_BINARIES}"


_BINARIES = "model"


def test_syncd_fetch_takes_the_store_uri_itself(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KServe's storageUri may name the store directly (gs://, wasbs://): no registry asked."""
    model = published(cloud, tmp_path, monkeypatch)
    uri = model_source(cloud, model)
    dest = tmp_path / "mnt-models"

    result = run_syncd("fetch", uri, str(dest), env=cloud.env(MLFLOW_TRACKING_URI=""))

    assert result.returncode == 0, result.stderr
    assert (dest / SHARD).read_bytes() == (model.folder / SHARD).read_bytes()
    again = run_syncd("fetch", uri, str(dest), env=cloud.env(MLFLOW_TRACKING_URI=""))
    assert again.returncode == 0, again.stderr
    assert "nothing downloaded" in again.stderr.splitlines()[-1]
    if cloud.name == "azure":  # KServe spells a blob as its URL: the same blob, the same bytes
        where = parse_azure_uri(uri)
        url = f"https://{where.host}/{where.container}/{where.prefix}"
        other = tmp_path / "mnt-models-url"
        by_url = run_syncd("fetch", url, str(other), env=cloud.env(MLFLOW_TRACKING_URI=""))
        assert by_url.returncode == 0, by_url.stderr
        assert (other / SHARD).read_bytes() == (dest / SHARD).read_bytes()


async def test_a_small_document_is_read_within_its_limit(
    azure: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob that is no small JSON document is refused after 1 MiB, not read whole."""
    from azure.storage.blob import BlobServiceClient

    from syncd.remote import azure as azure_store

    connection = azure.syncd_env["AZURE_STORAGE_CONNECTION_STRING"]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
    name = f"{unique_name('big')}/model_context.json"
    BlobServiceClient.from_connection_string(connection).get_blob_client(
        CONTAINER, name
    ).upload_blob(os.urandom(3 << 20))
    azure.proxy.faults.reset()
    where = parse_azure_uri(f"wasbs://{CONTAINER}@devstoreaccount1.blob.core.windows.net/{name}")

    async with azure_store.open_store(make_settings(azure.mlflow.url)) as store:
        with pytest.raises(SourceError, match="refused"):
            await store.read(where)

    assert sum(azure.proxy.faults.body_bytes.values()) <= SMALL_FILE_LIMIT + 1


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("gs://", "no bucket in gs://"),
        ("wasbs://models/path", "is not an Azure Blob URI"),
        ("hdfs://namenode/models", "uses hdfs"),
    ],
)
def test_a_store_uri_syncd_cannot_read_is_one_line(uri: str, said: str, tmp_path: Path) -> None:
    result = run_syncd("fetch", uri, str(tmp_path / "dest"), env=clean_env())

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert said in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "dest").exists()


def test_no_google_credentials_is_one_line(tmp_path: Path) -> None:
    """Outside GCP and without an emulator, google-auth finds nothing: syncd says so once,
    and not google-auth's own warnings before it."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(("GOOGLE_", "STORAGE_"))}
    env["GCE_METADATA_HOST"] = "127.0.0.1:9"  # no metadata server to wait for
    result = run_syncd("fetch", "gs://models/some/model", str(tmp_path / "dest"), env=env)

    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "no Google credentials for gs://" in lines[0]


async def test_the_daemon_heals_a_folder_from_the_cloud_store(
    gcs: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = published(gcs, tmp_path, monkeypatch)
    for key, value in gcs.syncd_env.items():
        monkeypatch.setenv(key, value)
    root = tmp_path / "llm-models"
    settings = make_settings(
        gcs.mlflow.url,
        targets=[
            {"name": "prod", "root": str(root), "alias": "production", "models": [model.name]}
        ],
        sweep_interval="1h",
        watch=True,
    )
    async with running(settings) as (daemon, _):
        await asyncio.wait_for(daemon.ready.wait(), 120)
        folder = root / model.parent_run_id
        original = (folder / SHARD).read_bytes()
        shutil.rmtree(folder)
        await eventually(
            lambda: (folder / SHARD).exists() and (folder / SHARD).read_bytes() == original,
            "the deleted folder rebuilt from GCS",
        )
        manifest = manifest_of(root, model.parent_run_id)
        assert {entry.verified_by for entry in manifest.files} == {"crc32c"}
