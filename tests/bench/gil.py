"""How long syncd's download holds the interpreter lock per GiB: the ceiling of one process.

`py-spy record --gil --nonblocking` samples only while some thread holds the GIL, so samples
divided by the rate are the seconds the lock was held; GiB over that is what one syncd process
could move on any machine, however many cores it has. Runs `python -m tests.bench.fetch`
(syncd's engine and syncer, no registry) against `rclone serve s3` over HTTP and over TLS, 3 x
1 GiB of multipart objects (MD5 ETags, so "checksum" is MD5 per part), size-only and verified.

Usage: python -m tests.bench.gil [--gib 3] [--rate 200]  (py-spy is installed in the tools venv)
Run it alone on the machine: other work on the cores lengthens the time a descheduled thread
holds the lock.
"""

from __future__ import annotations

import argparse
import os
import shutil
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

REPO = Path(__file__).resolve().parents[2]


def py_spy() -> str:
    binary = TOOLS_VENV / "bin" / "py-spy"
    if not binary.exists():
        tools()
        subprocess.run([str(TOOLS_VENV / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    return str(binary)


def held(
    spy: str, endpoint: str, root: Path, verify: str, rate: int, out: Path
) -> tuple[float, float, float]:
    """(seconds the GIL was held, wall seconds, CPU seconds) of one fetch."""
    env = {**os.environ, "SYNCD_S3__ENDPOINT_URL": endpoint}
    uri = f"s3://models/runs/{RUN}/model"
    fetch = [sys.executable, "-m", "tests.bench.fetch", uri, str(root), RUN, verify]
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
    parser.add_argument("--gib", type=int, default=3)
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
                for verify in ("size", "checksum"):
                    for round_ in range(args.rounds):
                        root = work / f"root-{tls}-{verify}-{round_}"
                        os.sync()
                        time.sleep(1)
                        seconds, wall, cpu = held(
                            spy, endpoint, root, verify, args.rate, work / "profile.txt"
                        )
                        shutil.rmtree(root, ignore_errors=True)
                        rows.append(("TLS" if tls else "HTTP", verify, seconds, wall, cpu))
            finally:
                server.terminate()
                server.wait()
                os.environ.pop("AWS_CA_BUNDLE", None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| transport | verify | GIL held s/GiB | ceiling GiB/s | wall s | CPU s/GiB |")
    print("|---|---|---|---|---|---|")
    for transport, verify, seconds, wall, cpu in rows:
        per = seconds / args.gib
        print(
            f"| {transport} | {verify} | {per:.2f} | {1 / per if per else float('inf'):.1f} "
            f"| {wall:.2f} | {cpu / args.gib:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
