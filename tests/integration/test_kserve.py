"""`syncd fetch` exactly as KServe runs a ClusterStorageContainer: positional `URI DEST` pairs
and only the environment KServe injects (the service account's S3 secret as AWS_* and S3_*
variables, MLFLOW_TRACKING_URI from the CR's env; no SYNCD_ variable), against the real MLflow
and S3 servers. Exit 0 is success; anything else, with the last line of the log, becomes the
InferenceService's ModelLoadFailed message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from syncd.app.embedded import free_port
from syncd.core.manifest import Manifest
from tests.support.daemon import WAIT
from tests.support.disk import fill
from tests.support.models import publish, unique_name
from tests.support.venv import REPO


def kserve_env(tracking_uri: str, s3_url: str, **extra: str) -> dict[str, str]:
    """What KServe's storage initializer injector sets (pkg/credentials/s3), and nothing of
    the test run's own: S3_ENDPOINT without a scheme, S3_USE_HTTPS=0 for plain HTTP."""
    keep = {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL=s3_url,
        S3_ENDPOINT=urlsplit(s3_url).netloc,
        S3_USE_HTTPS="0",
        S3_VERIFY_SSL="0",
        AWS_DEFAULT_REGION="us-east-1",
        MLFLOW_TRACKING_URI=tracking_uri,
    )
    env.update(extra)
    return env


def fetch(*pairs: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "fetch", *map(str, pairs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def last_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def source_files(folder: Path) -> set[str]:
    (model,) = folder.iterdir()  # publish() writes the model folder inside
    return {p.name for p in model.iterdir()}


def source_bytes(folder: Path, name: str) -> bytes:
    (model,) = folder.iterdir()
    return (model / name).read_bytes()


def listed(dest: Path) -> set[str]:
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if ".syncd" not in p.parts}


@pytest.fixture
def s3_url() -> str:
    return os.environ["MLFLOW_S3_ENDPOINT_URL"]


def test_one_pair_then_a_rerun_into_complete_and_half_done_dest(
    mlflow_server: Any, s3_url: str, tmp_path: Path
) -> None:
    name = unique_name("kserve")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(3, 1))
    dest = tmp_path / "mnt" / "models"
    dest.mkdir(parents=True)  # the emptyDir, a mount point: never renamed
    env = kserve_env(mlflow_server.url, s3_url)
    first = fetch(f"models:/{name}@production", dest, env=env)
    assert first.returncode == 0, first.stderr
    expected = source_files(tmp_path / "src")
    assert listed(dest) == expected  # exactly the version's files, straight into DEST
    assert {p.name for p in dest.iterdir()} == expected | {".syncd"}
    (manifest_file,) = (dest / ".syncd" / "manifests").iterdir()
    manifest = Manifest.from_json(manifest_file.read_text())
    assert manifest.run_id == published.parent_run_id
    assert all(entry.verified_by != "size" for entry in manifest.files)
    for entry in manifest.files:
        assert (dest / entry.path).read_bytes() == source_bytes(tmp_path / "src", entry.path)
    inodes = {p.name: p.stat().st_ino for p in dest.iterdir() if p.is_file()}

    again = fetch(f"models:/{name}@production", dest, env=env)
    assert again.returncode == 0, again.stderr
    assert "already in place and verified; nothing downloaded" in again.stderr
    assert {p.name: p.stat().st_ino for p in dest.iterdir() if p.is_file()} == inodes

    (dest / "config.json").unlink()  # half done: only what is missing is fetched
    half = fetch(f"models:/{name}@production", dest, env=env)
    assert half.returncode == 0, half.stderr
    assert "(1 downloaded" in half.stderr
    assert listed(dest) == expected


@pytest.mark.filterwarnings("ignore:.*transition_model_version_stage.*:FutureWarning")
def test_several_pairs_by_alias_version_and_stage(
    mlflow_server: Any, s3_url: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    first, second = unique_name("kfirst"), unique_name("ksecond")
    a = publish(mlflow_server.url, tmp_path / "a", first, shard_mib=(1,))
    b = publish(mlflow_server.url, tmp_path / "b", second, shard_mib=(1,))
    MlflowClient(mlflow_server.url).transition_model_version_stage(second, b.version, "Production")
    dests = [tmp_path / "m0", tmp_path / "m1", tmp_path / "m2"]
    result = fetch(
        *(f"models:/{first}@production", dests[0]),
        *(f"models:/{first}/{a.version}", dests[1]),
        *(f"models:/{second}/Production", dests[2]),
        env=kserve_env(mlflow_server.url, s3_url),
    )
    assert result.returncode == 0, result.stderr
    for dest, source in zip(dests, ("a", "a", "b"), strict=True):
        assert listed(dest) == source_files(tmp_path / source)


def test_failures_are_one_plain_last_line(
    mlflow_server: Any, s3_url: str, faults: Any, tmp_path: Path
) -> None:
    name = unique_name("kfail")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    env = kserve_env(mlflow_server.url, s3_url)
    dest = tmp_path / "models"
    missing = unique_name("nomodel")
    assert last_line(fetch(f"models:/{missing}@production", dest, env=env)) == (
        f"syncd: {missing}: no registered model named {missing!r}"
    )
    assert last_line(fetch(f"models:/{name}@nope", dest, env=env)) == (
        f"syncd: {name}: no alias 'nope' (aliases: production)"
    )
    # usage mistakes exit 2, as argparse's own do
    assert "names no model version" in last_line(fetch("models:/justaname", dest, env=env), 2)
    assert last_line(fetch("models:/x@y", env=env), 2) == (
        "syncd fetch: takes SOURCE_URI DEST_PATH pairs (got 1 argument) (see syncd fetch --help)"
    )
    dead = f"http://127.0.0.1:{free_port()}"
    down = last_line(
        fetch(
            f"models:/{name}@production",
            dest,
            env={**env, "MLFLOW_TRACKING_URI": dead, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
        )
    )
    assert down.startswith(f"syncd: MLflow at {dead}: ")
    assert "connection refused" in down
    # bytes that fail their check every time: never left in DEST as if they were good
    faults.faults.corrupt["model-00001-of-00001.safetensors"] = 50
    bad = last_line(
        fetch(
            f"models:/{name}@production",
            dest,
            env={**env, "AWS_ENDPOINT_URL": faults.url, "S3_ENDPOINT": urlsplit(faults.url).netloc},
        )
    )
    assert "checksum" in bad.lower() or "mismatch" in bad.lower(), bad
    assert not (dest / "model-00001-of-00001.safetensors").exists()


def test_no_space_is_one_plain_last_line(
    mlflow_server: Any,
    s3_url: str,
    tmp_path: Path,
    small_disk: Path,
) -> None:
    name = unique_name("kspace")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(8,))
    fill(small_disk)
    line = last_line(
        fetch(
            f"models:/{name}@production",
            small_disk / "models",
            env=kserve_env(mlflow_server.url, s3_url),
        )
    )
    assert "space" in line, line


def test_the_cluster_storage_containers_match_kserves_fields() -> None:
    documents = [
        yaml.safe_load(p.read_text()) for p in sorted((REPO / "config" / "kserve").glob("*.yaml"))
    ]
    kinds: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        kinds.setdefault(document["kind"], []).append(document)
    containers = kinds["ClusterStorageContainer"]
    assert {c.get("spec", {}).get("workloadType", "initContainer") for c in containers} == {
        "initContainer",
        "localModelDownloadJob",
    }
    for document in containers:
        assert document["apiVersion"] == "serving.kserve.io/v1alpha1"
        spec = document["spec"]
        assert spec["supportedUriFormats"] == [{"prefix": "models:/"}]
        container = spec["container"]
        assert container["name"] == "storage-initializer"
        assert container["command"] == ["syncd", "fetch"]
        assert "syncd" in container["image"]
        assert container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"]
        if spec.get("workloadType") != "localModelDownloadJob":
            assert spec["supportsMultiModelDownload"] is True
    (service,) = kinds["InferenceService"]
    uri = service["spec"]["predictor"]["model"]["storageUri"]
    assert uri.startswith("models:/")
