"""Helpers that publish models to the real MLflow server the way data scientists do."""

from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from syncd.app.demo import write_sample_model
from syncd.publish import Layout, PublishedModel, publish_model


def unique_name(prefix: str = "llm") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def model_folder(tmp_path: Path, shard_mib: tuple[int, ...] = (12, 3)) -> Path:
    """A small Hugging Face-shaped folder; the first shard is a multipart upload (> 8 MiB)."""
    return write_sample_model(tmp_path / f"model-{uuid.uuid4().hex[:6]}", shard_mib)


def publish(
    tracking_uri: str,
    tmp_path: Path,
    name: str,
    *,
    alias: str | None = "production",
    layout: Layout = "mlflow3",
    shard_mib: tuple[int, ...] = (12, 3),
    context_run_id: str | None = None,
) -> PublishedModel:
    return publish_model(
        tracking_uri,
        name,
        model_folder(tmp_path, shard_mib),
        alias=alias,
        layout=layout,
        context_run_id=context_run_id,
    )


def publish_without_context(
    tracking_uri: str, tmp_path: Path, name: str, *, nested: bool
) -> tuple[str, str]:
    """Binaries on a run and a version with no model_context.json; nested or not.

    Returns (run holding the binaries, the version number).
    """
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    folder = model_folder(tmp_path, (1,))
    with mlflow.start_run() as parent:
        mlflow.log_artifacts(str(folder), "model")
        holder = parent.info.run_id
        if nested:
            with mlflow.start_run(nested=True) as child:
                mlflow.log_text(json.dumps({"note": "no context here"}), "pyfunc/readme.json")
                source_run = child.info.run_id
                source = f"{child.info.artifact_uri}/pyfunc"
        else:
            source_run = holder
            source = f"{parent.info.artifact_uri}/model"
    client.create_registered_model(name)
    version = client.create_model_version(name, source, run_id=source_run)
    client.set_registered_model_alias(name, "production", version.version)
    return holder, str(version.version)


def s3_env() -> dict[str, str]:
    return {key: os.environ[key] for key in ("MLFLOW_S3_ENDPOINT_URL",)}


def seed_models(
    tracking_uri: str, s3_client: Any, prefix: str, count: int, *, alias: str = "production"
) -> dict[str, str]:
    """`count` registered models in the nested-run pattern, fast: straight REST and S3 calls,
    one tiny file each (the publish path logs pyfunc models; at this scale only the registry's
    shape matters). Returns model name -> parent run id."""
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment(f"{prefix}-seed")

    def one(index: int) -> tuple[str, str]:
        name = f"{prefix}-{index:04d}"
        parent = client.create_run(experiment)
        child = client.create_run(experiment, tags={"mlflow.parentRunId": parent.info.run_id})
        for run, key, body in (
            (parent, "model/config.json", json.dumps({"model": name}).encode()),
            (
                child,
                "pyfunc/artifacts/model_context.json",
                json.dumps({"run_id": parent.info.run_id}).encode(),
            ),
        ):
            bucket, _, path = run.info.artifact_uri.removeprefix("s3://").partition("/")
            s3_client.put_object(Bucket=bucket, Key=f"{path}/{key}", Body=body)
        client.create_registered_model(name)
        version = client.create_model_version(
            name, f"{child.info.artifact_uri}/pyfunc", run_id=child.info.run_id
        )
        client.set_registered_model_alias(name, alias, version.version)
        return name, parent.info.run_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(one, range(count)))
