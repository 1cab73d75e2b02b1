"""The seed notebook's copy: list the prefix, then a serial boto3 download_file per object.

Usage: python -m tests.bench.boto3_loop ENDPOINT BUCKET PREFIX DEST
"""

from __future__ import annotations

import os
import sys

import boto3


def main(endpoint: str, bucket: str, prefix: str, dest: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + "/"
    ):
        for item in page.get("Contents", []):
            target = os.path.join(dest, item["Key"][len(prefix) + 1 :])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            client.download_file(bucket, item["Key"], target)


if __name__ == "__main__":
    main(*sys.argv[1:5])
