"""How long syncd's download holds the interpreter lock per GiB: the ceiling of one process.

`py-spy record --gil --nonblocking` samples only while some thread holds the GIL, so samples
divided by the rate are the seconds the lock was held; GiB over that is what one syncd process
could move on any machine, however many cores it has. Runs `python -m tests.bench.fetch`
(syncd's engine and syncer, no registry) against `rclone serve s3` over HTTP and over TLS, 1 GiB
and N x 1 GiB of multipart objects (rclone states whole-file MD5 ETags, so "checksum" is MD5),
size-only and verified. The lock held per GiB is the slope between the two sizes: the start-up
(imports, settings, clients: ~0.3 s of the lock, once) is reported on its own instead of being
spread over the bytes.

Usage: python -m tests.bench.gil [--gib 3] [--rate 200] [--rounds 1]
(py-spy is installed in the tools venv.)
Run it alone on the machine: other work on the cores lengthens the time a descheduled thread
holds the lock.
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
from pathlib import Path

from tests.bench.bench import (
    TOOLS_VENV,
    s3_client,
    self_signed,
    start_rclone,
    tools,
    use_bench_credentials,
)
from tests.bench.engine_ab import RUN, upload

ONE = "b" * 32  # a prefix holding one of the objects, for the slope

REPO = Path(__file__).resolve().parents[2]


def py_spy() -> str:
    binary = TOOLS_VENV / "bin" / "py-spy"
    if not binary.exists():
        tools()
        subprocess.run([str(TOOLS_VENV / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    return str(binary)


def held(
    spy: str, endpoint: str, root: Path, verify: str, rate: int, out: Path, run: str = RUN
) -> tuple[float, float, float]:
    """(seconds the GIL was held, wall seconds, CPU seconds) of one fetch of `run`'s objects."""
    env = {**os.environ, "SYNCD_S3__ENDPOINT_URL": endpoint}
    uri = f"s3://models/runs/{run}/model"
    fetch = [sys.executable, "-m", "tests.bench.fetch", uri, str(root), run, verify]
    started = time.perf_counter()
    before = os.times()
    subprocess.run(
        [
            spy,
            "record",
            "--gil",
            "--nonblocking",
            "--threads",
            "-r",
            str(rate),
            "-f",
            "raw",
            "-o",
            str(out),
            "--",
            *fetch,
        ],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    after = os.times()
    wall = time.perf_counter() - started
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    samples = 0
    for line in out.read_text().splitlines():
        # raw (collapsed) format: "frame;frame;... COUNT"
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples += int(count)
    return samples / rate, wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=int, default=3, help="the larger size (at least 2)")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    use_bench_credentials()
    spy = py_spy()
    work = Path(tempfile.mkdtemp(prefix="syncd-gil-", dir=os.environ.get("SYNCD_BENCH_DIR")))
    rows = []
    try:
        for tls in (False, True):
            certificate = self_signed(work) if tls else None
            if certificate is not None:
                os.environ["AWS_CA_BUNDLE"] = str(certificate[0])
                os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"
            data = work / ("rclone-tls" if tls else "rclone")
            data.mkdir()
            server, endpoint = start_rclone(tools(), data, work / f"{data.name}.log", certificate)
            try:
                client = s3_client(endpoint)
                client.create_bucket(Bucket="models")
                upload(client, work, args.gib)
                source = {"Bucket": "models", "Key": f"runs/{RUN}/model/shard-0.bin"}
                client.copy_object(
                    CopySource=source, Bucket="models", Key=f"runs/{ONE}/model/shard-0.bin"
                )
                for verify in ("size", "checksum"):
                    for round_ in range(args.rounds):
                        measured = []
                        for run in (ONE, RUN):
                            root = work / f"root-{tls}-{verify}-{round_}"
                            os.sync()
                            time.sleep(1)
                            measured.append(
                                held(spy, endpoint, root, verify, args.rate, work / "p.txt", run)
                            )
                            shutil.rmtree(root, ignore_errors=True)
                        (one, _, _), (many, wall, cpu) = measured
                        per = (many - one) / (args.gib - 1)
                        transport = "TLS" if tls else "HTTP"
                        rows.append((transport, verify, per, one - per, many, wall, cpu))
            finally:
                server.terminate()
                server.wait()
                os.environ.pop("AWS_CA_BUNDLE", None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"| transport | verify | GIL held s/GiB | ceiling GiB/s | start-up GIL s "
        f"| {args.gib} GiB: GIL s | wall s | CPU s/GiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    cases = dict.fromkeys((row[0], row[1]) for row in rows)
    for transport, verify in cases:
        mine = [row[2:] for row in rows if row[:2] == (transport, verify)]
        columns = zip(*mine, strict=True)
        per, startup, total, wall, cpu = (statistics.median(column) for column in columns)
        ceiling = f"{1 / per:.1f}" if per > 0 else "inf"
        print(
            f"| {transport} | {verify} | {per:.3f} | {ceiling} | {startup:.2f} | {total:.2f} "
            f"| {wall:.2f} | {cpu / args.gib:.2f} |"
        )
    print(f"(medians of {args.rounds} round(s); py-spy at {args.rate} Hz)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
