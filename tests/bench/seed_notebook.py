"""The seed's prod notebook as a command: registry lookups, then a serial boto3 download loop.

Given a model and an alias: the version's run, its model_context.json (downloaded with boto3),
the parent run named there, a listing of `{parent}/artifacts/model/` and one `download_file`
per object into `DEST/{parent_run_id}`, after deleting that folder (no verification).
Usage: python -m tests.bench.seed_notebook MODEL ALIAS DEST
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import boto3
from mlflow import MlflowClient


def main(model: str, alias: str, dest: str) -> None:
    client = MlflowClient()
    version = client.get_model_version_by_alias(model, alias)
    child = client.get_run(version.run_id)
    s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
    bucket, _, prefix = child.info.artifact_uri.removeprefix("s3://").partition("/")
    context = s3.get_object(Bucket=bucket, Key=f"{prefix}/pyfunc/artifacts/model_context.json")
    parent_run_id = json.loads(context["Body"].read())["run_id"]
    parent = client.get_run(parent_run_id)
    bucket, _, prefix = parent.info.artifact_uri.removeprefix("s3://").partition("/")
    prefix = f"{prefix}/model"
    target = os.path.join(dest, parent_run_id)
    shutil.rmtree(target, ignore_errors=True)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            path = os.path.join(target, item["Key"][len(prefix) + 1 :])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, item["Key"], path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
