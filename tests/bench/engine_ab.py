"""A/B of the data path: this checkout against another commit, same server, runs alternating.

`python -m tests.bench.engine_ab --base REF [--gib 3] [--rounds 3] [--tls]` checks REF out
into a scratch worktree, serves `--gib` 1 GiB objects (uploaded as MLflow's boto3 does: 8 MiB
parts) from `rclone serve s3` (over HTTPS with a self-signed certificate with `--tls`), and
times `python -m tests.bench.fetch` (the syncer's one-shot path without the registry) from each
tree in turn, size-only and verified, under `/usr/bin/time`. The order alternates from round to
round, since the first run after the upload pays its writeback. `--small N` serves N objects of
64 KiB instead (each in one PUT, as small files are) and reports CPU seconds per run: the
small-file path (one whole GET per object). `--base-env` / `--this-env
NAME=VALUE` set a variable for one side only (`--base HEAD --this-env
SYNCD_S3__MAX_CONCURRENCY=8` compares a setting). It prints each run and the medians of wall
time and CPU seconds per GiB: a refactor of the engine shows here whether it cost anything
before the full benchmark is run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from tests.bench.bench import (
    s3_client,
    self_signed,
    start_rclone,
    tools,
    use_bench_credentials,
)

REPO = Path(__file__).resolve().parents[2]
RUN = "a" * 32
GiB = 1 << 30


SMALL = 64 << 10


def upload_small(client: Any, count: int) -> None:
    def put(index: int) -> None:
        key = f"runs/{RUN}/model/file-{index:05d}.bin"
        client.put_object(Bucket="models", Key=key, Body=os.urandom(SMALL))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


def upload(client: object, work: Path, count: int, run: str = RUN) -> None:
    parts = TransferConfig(
        multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=10
    )
    for index in range(count):
        source = work / f"shard-{index}"
        with source.open("wb") as handle:
            for _ in range(GiB // (64 << 20)):
                handle.write(os.urandom(64 << 20))
        key = f"runs/{run}/model/shard-{index}.bin"
        client.upload_file(str(source), "models", key, Config=parts)  # type: ignore[attr-defined]
        source.unlink()


def one(
    tree: Path, endpoint: str, root: Path, verify: str, extra: dict[str, str]
) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one fetch from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "SYNCD_S3__ENDPOINT_URL": endpoint, **extra}
    uri = f"s3://models/runs/{RUN}/model"
    command = ["/usr/bin/time", "-f", "%U %S %M", sys.executable, "-m", "tests.bench.fetch"]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, uri, str(root), RUN, verify],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    user, system, rss = done.stderr.strip().splitlines()[-1].split()
    return wall, float(user) + float(system), int(rss) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--gib", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=0, help="N objects of 64 KiB instead")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS (self-signed)")
    parser.add_argument("--base-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--this-env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    extra = {
        "base": dict(item.split("=", 1) for item in args.base_env),
        "this": dict(item.split("=", 1) for item in args.this_env),
    }
    use_bench_credentials()
    work = Path(tempfile.mkdtemp(prefix="syncd-ab-", dir=os.environ.get("SYNCD_BENCH_DIR")))
    base = work / "base"
    git = ["git", "-C", str(REPO), "worktree"]
    subprocess.run([*git, "add", "-f", str(base), args.base], check=True)
    (work / "rclone").mkdir()
    certificate = self_signed(work) if args.tls else None
    if certificate is not None:
        os.environ["AWS_CA_BUNDLE"] = str(certificate[0])
        # rclone refuses boto3's aws-chunked uploads (trailing checksums), which it sends
        # only over HTTPS: MissingContentLength.
        os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"
    server, endpoint = start_rclone(tools(), work / "rclone", work / "rclone.log", certificate)
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    try:
        client = s3_client(endpoint)
        client.create_bucket(Bucket="models")
        if args.small:
            upload_small(client, args.small)
        else:
            upload(client, work, args.gib)
        # CPU per GiB for large objects; CPU seconds per run for many small ones.
        per, unit = (1.0, "CPU s") if args.small else (float(args.gib), "CPU s/GiB")
        for round_ in range(args.rounds):
            for verify in ("size", "checksum"):
                sides = [("base", base), ("this", REPO)]
                for label, tree in sides if round_ % 2 == 0 else sides[::-1]:
                    os.sync()
                    time.sleep(1)
                    wall, cpu, rss = one(tree, endpoint, work / "root", verify, extra[label])
                    shutil.rmtree(work / "root", ignore_errors=True)
                    results.setdefault((verify, label), []).append((wall, cpu, rss))
                    print(
                        f"round {round_ + 1} {verify:8} {label}: {wall:.2f} s, "
                        f"{cpu / per:.2f} {unit}, {rss:.0f} MB",
                        flush=True,
                    )
    finally:
        server.terminate()
        server.wait()
        subprocess.run([*git, "remove", "--force", str(base)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    over = "HTTPS" if args.tls else "HTTP"
    what = f"{args.small} x 64 KiB" if args.small else f"{args.gib} x 1 GiB"
    print(f"\nmedians of {args.rounds}, {what} over {over}, base {args.base}:")
    for (verify, label), rows in sorted(results.items()):
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows) / per
        rss = max(r[2] for r in rows)
        print(f"  {verify:8} {label}: {wall:.2f} s, {cpu:.2f} {unit}, {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
