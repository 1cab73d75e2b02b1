"""The benchmark's world: rclone serve s3, a real `mlflow server`, models published as the seed
does, and the commands users run against them."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from syncd.app.embedded import MlflowServer

MiB = 1 << 20
BUCKET = "models"
# syncd as users install it: `pip install .` into a virtualenv of its own (the MLflow client
# only). The benchmark's own environment has the full `mlflow` (the server, the peers), whose
# import pulls pandas in: timing syncd there would time a dependency users do not install.
SYNCD_VENV = Path(os.environ.get("SYNCD_BENCH_VENV", Path.home() / ".cache" / "syncd-bench-syncd"))
SYNCD = str(SYNCD_VENV / "bin" / "syncd")
REPO = Path(__file__).resolve().parents[2]


def install_syncd() -> float:
    """(Re)install this checkout with `pip install .` into a fresh venv; returns its size in MB."""
    import shutil
    import subprocess

    shutil.rmtree(SYNCD_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(SYNCD_VENV)], check=True)
    subprocess.run([str(SYNCD_VENV / "bin" / "pip"), "install", "-q", str(REPO)], check=True)
    # Space on disk as `du` counts it (blocks), not the files' apparent sizes.
    return sum(p.lstat().st_blocks * 512 for p in SYNCD_VENV.rglob("*")) / 1e6


@dataclass(frozen=True)
class Published:
    model: str
    version: str
    parent_run_id: str
    prefix: str  # the binaries' S3 prefix: {bucket}/{...}/{parent}/artifacts/model


def upload_files(client: Any, bucket: str, prefix: str, files: dict[str, int]) -> None:
    """Random bytes uploaded from files, as MLflow's log_artifacts does (upload_file)."""
    transfer = TransferConfig(
        multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=10
    )

    def upload(item: tuple[str, int]) -> None:
        name, size = item
        with tempfile.NamedTemporaryFile(dir=os.environ.get("SYNCD_BENCH_DIR")) as handle:
            remaining = size
            while remaining:
                step = min(remaining, 64 * MiB)
                handle.write(os.urandom(step))
                remaining -= step
            handle.flush()
            client.upload_file(handle.name, bucket, f"{prefix}/{name}", Config=transfer)

    # Many small files go up side by side; large ones already use 10 threads each.
    with ThreadPoolExecutor(max_workers=16 if len(files) > 16 else 1) as pool:
        list(pool.map(upload, files.items()))


def publish(
    tracking_uri: str, s3: Any, model: str, files: dict[str, int], *, alias: bool = True
) -> Published:
    """Binaries on a parent run, model_context.json on a nested child, a version, the alias."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("bench")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("bench")
    parent = client.create_run(experiment_id)
    child = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent.info.run_id})
    bucket, _, path = parent.info.artifact_uri.removeprefix("s3://").partition("/")
    upload_files(s3, bucket, f"{path}/model", files)
    child_bucket, _, child_path = child.info.artifact_uri.removeprefix("s3://").partition("/")
    s3.put_object(
        Bucket=child_bucket,
        Key=f"{child_path}/pyfunc/artifacts/model_context.json",
        Body=json.dumps({"run_id": parent.info.run_id}).encode(),
    )
    if not client.search_registered_models(filter_string=f"name = '{model}'"):
        client.create_registered_model(model)
    version = client.create_model_version(
        model, f"{child.info.artifact_uri}/pyfunc", run_id=child.info.run_id
    )
    if alias:
        client.set_registered_model_alias(model, "production", version.version)
    return Published(model, str(version.version), parent.info.run_id, f"{bucket}/{path}/model")


def start_mlflow(log_dir: Path, endpoint: str) -> MlflowServer:
    server = MlflowServer(log_dir, endpoint, default_artifact_root=f"s3://{BUCKET}/artifacts")
    server.start()
    return server


def commands(
    published: Published,
    endpoint: str,
    dest: Path,
    bins: dict[str, str],
    ca_bundle: str | None = None,
) -> list[tuple[str, str, list[str], dict[str, str]]]:
    """(tool, what it verifies, command, extra environment) for every peer.

    `ca_bundle`: the server's self-signed certificate (TLS); the Python tools and aws take it
    from AWS_CA_BUNDLE, rclone from --ca-cert, s5cmd (no option for a CA file) skips the check.
    """
    tls_rclone = ["--ca-cert", ca_bundle] if ca_bundle else []
    tls_s5cmd = ["--no-verify-ssl"] if ca_bundle else []
    uri = f"s3://{published.prefix}"
    root = str(dest / "root")
    sync = [SYNCD, "sync", "--model", published.model, "--alias", "production"]
    sync += ["--root", root, "--no-progress"]
    rclone_env = {
        "RCLONE_S3_PROVIDER": "Other",
        "RCLONE_S3_ENDPOINT": endpoint,
        "RCLONE_S3_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "RCLONE_S3_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "RCLONE_S3_FORCE_PATH_STYLE": "true",
    }
    bucket, _, key_prefix = published.prefix.partition("/")
    floor = [sys.executable, "-m", "tests.bench.floor", endpoint, bucket, key_prefix, str(dest)]
    return [
        ("syncd sync (verified)", "checksum", sync, {}),
        ("syncd sync (size only)", "size", sync, {"SYNCD_S3__VERIFY": "size"}),
        ("floor: aiobotocore script", "none", floor, {}),
        (
            "seed notebook (boto3 loop)",
            "none",
            [
                sys.executable,
                "-m",
                "tests.bench.seed_notebook",
                published.model,
                "production",
                str(dest),
            ],
            {},
        ),
        (
            "rclone copy",
            "md5",
            [
                bins["rclone"],
                "copy",
                f":s3:{published.prefix}",
                str(dest),
                "--transfers",
                "16",
                *tls_rclone,
            ],
            rclone_env,
        ),
        (
            "s5cmd",
            "none",
            [bins["s5cmd"], *tls_s5cmd, "--endpoint-url", endpoint, "cp", f"{uri}/*", f"{dest}/"],
            {},
        ),
        (
            # syncd makes every file durable before it publishes; this is s5cmd held to that.
            "s5cmd, then sync",
            "none",
            [
                "sh",
                "-c",
                '"$0" $4 --endpoint-url "$1" cp "$2/*" "$3/" && sync',
                bins["s5cmd"],
                endpoint,
                uri,
                str(dest),
                *tls_s5cmd,
            ],
            {},
        ),
        (
            "aws s3 cp",
            "none",
            [
                bins["aws"],
                "--endpoint-url",
                endpoint,
                "s3",
                "cp",
                uri,
                str(dest),
                "--recursive",
                "--only-show-errors",
            ],
            {},
        ),
        (
            "mlflow artifacts download",
            "none",
            [
                sys.executable,
                "-m",
                "mlflow",
                "artifacts",
                "download",
                "--artifact-uri",
                f"runs:/{published.parent_run_id}/model",
                "--dst-path",
                str(dest),
            ],
            {},
        ),
    ]
