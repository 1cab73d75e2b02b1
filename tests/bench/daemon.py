"""Benchmarks of a running `syncd run`: alias move to folder, and the registry at 1,000 models."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syncd.app.embedded import free_port
from syncd.app.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.bench.scenario import SYNCD, Published, publish
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.models import seed_models

SECRET = "bench-webhook-secret"


def _wait(check: Callable[[], bool], limit: float = 600.0, step: float = 0.005) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > limit:
            raise RuntimeError("timed out")
        time.sleep(step)
    return time.perf_counter() - started


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _proc(pid: int) -> tuple[float, float]:
    """(RSS MB, CPU seconds) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


class Daemon:
    """`syncd run` as a real process with a config of its own."""

    def __init__(self, work: Path, config: dict[str, Any], env: dict[str, str]) -> None:
        self.port = free_port()
        config = {
            **config,
            "http": {"host": "127.0.0.1", "port": self.port, "webhook_secret": SECRET},
        }
        path = work / f"syncd-{self.port}.yaml"
        path.write_text(json.dumps(config))
        self.log = work / f"syncd-{self.port}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [SYNCD, "run", "--config", str(path)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> float:
        return _wait(lambda: _ready(self.port) or self.process.poll() is not None)

    def webhook(self, model: str, alias: str, version: str) -> None:
        body = json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "data": {"name": model, "alias": alias, "version": version},
            }
        ).encode()
        delivery, stamp = "bench-1", str(int(time.time()))
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/webhooks/mlflow",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                DELIVERY_HEADER: delivery,
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: sign(SECRET, delivery, stamp, body),
            },
        )
        urllib.request.urlopen(request, timeout=10).read()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def alias_move_workload(
    tracking_uri: str,
    s3: Any,
    work: Path,
    files: dict[str, int],
    rounds: int,
    env: dict[str, str],
) -> str:
    """A running daemon: alias moved to a new ~1 GB version -> folder in place (poll, webhook)."""
    model = "bench-daemon"
    first = publish(tracking_uri, s3, model, files)
    root = work / "daemon-root"
    config = {
        "poll_interval": "5s",
        "gc_grace": "1h",
        "targets": [{"name": "prod", "root": str(root), "alias": "production", "models": [model]}],
    }
    daemon = Daemon(work, config, env)
    rows = []
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        daemon.wait_ready()
        assert (root / first.parent_run_id).is_dir(), daemon.log.read_text()[-2000:]
        for how in ("poll (5s)", "webhook"):
            times = []
            for _ in range(rounds):
                moved: Published = publish(tracking_uri, s3, model, files, alias=False)
                # The upload's gigabyte is still dirty in the page cache of the disk both the
                # S3 server and the dataset live on here; syncd's flush before publishing would
                # pay for it. Settle it first, as the one-shot rows do.
                os.sync()
                time.sleep(1)
                started = time.perf_counter()
                client.set_registered_model_alias(model, "production", moved.version)
                if how == "webhook":
                    daemon.webhook(model, "production", moved.version)
                manifest = root / ".syncd" / "manifests" / f"{moved.parent_run_id}.json"
                _wait(manifest.exists)
                times.append(time.perf_counter() - started)
            rows.append(
                f"| alias moved, {how} | {statistics.median(times):.2f} | "
                f"{min(times):.2f} | {max(times):.2f} |"
            )
    finally:
        daemon.stop()
    size = sum(files.values()) / (1 << 20)
    return (
        "\n".join(
            [
                f"### Daemon: alias moved -> folder in place ({len(files)} files, {size:.0f} MiB)",
                "",
                "| trigger | median s | min s | max s |",
                "|---|---|---|---|",
                *rows,
            ]
        )
        + "\n"
    )


def registry_workload(
    tracking_uri: str, endpoint: str, s3: Any, work: Path, env: dict[str, str], models: int = 1000
) -> str:
    """The daemon over 1,000 models: requests per idle poll, restart, alias move, RSS, CPU."""
    print(f"registry: seeding {models} models", flush=True)
    prefix = "fleet"
    seed_models(tracking_uri, s3, prefix, models)
    mlflow_proxy, s3_proxy = FaultyS3Proxy(tracking_uri), FaultyS3Proxy(endpoint)
    mlflow_proxy.start()
    s3_proxy.start()
    root = work / "fleet-root"
    env = {**env, "MLFLOW_TRACKING_URI": mlflow_proxy.url, "MLFLOW_S3_ENDPOINT_URL": s3_proxy.url}
    config = {
        "poll_interval": "5s",
        "sweep_interval": "1h",
        "remote_check_interval": "24h",
        "targets": [
            {"name": "prod", "root": str(root), "alias": "production", "models": [f"{prefix}-*"]}
        ],
    }

    def counts() -> tuple[int, int]:
        mlflow = sum(v for k, v in mlflow_proxy.faults.requests.items() if "/api/" in k)
        return mlflow, sum(s3_proxy.faults.requests.values())

    def reset() -> None:
        mlflow_proxy.faults.reset()
        s3_proxy.faults.reset()

    lines = []
    try:
        daemon = Daemon(work, config, env)
        first = daemon.wait_ready()
        lines.append(
            f"| first start, {models} folders to sync | {first:.1f} s | "
            f"{counts()[0]} | {counts()[1]} |"
        )
        reset()
        time.sleep(5 * 3 + 1)  # three idle polls
        mlflow, s3_calls = counts()
        lines.append(f"| 3 idle polls (poll_interval 5s) | - | {mlflow} | {s3_calls} |")
        rss, cpu = _proc(daemon.process.pid)
        time.sleep(60)
        rss2, cpu2 = _proc(daemon.process.pid)
        idle = (cpu2 - cpu) / 60 * 100
        daemon.stop()
        reset()
        config_30 = {**config, "poll_interval": "30s"}
        daemon = Daemon(work, config_30, env)
        ready = daemon.wait_ready()
        mlflow, s3_calls = counts()
        lines.append(
            f"| restart, {models} folders in place | {ready:.2f} s | {mlflow} | {s3_calls} |"
        )
        rss30, cpu30 = _proc(daemon.process.pid)
        time.sleep(60)
        rss30b, cpu30b = _proc(daemon.process.pid)
        idle30 = (cpu30b - cpu30) / 60 * 100
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
        name = f"{prefix}-0042"
        moved = seed_models(tracking_uri, s3, f"{prefix}-moved", 1)
        ((moved_name, moved_run),) = moved.items()
        source = client.get_model_version_by_alias(moved_name, "production")
        newest = client.create_model_version(name, source.source, run_id=source.run_id).version
        reset()
        client.set_registered_model_alias(name, "production", str(newest))
        started = time.perf_counter()
        daemon.webhook(name, "production", str(newest))
        _wait(lambda: (root / ".syncd" / "manifests" / f"{moved_run}.json").exists())
        webhook_s = time.perf_counter() - started
        mlflow, s3_calls = counts()
        lines.append(
            f"| alias moved among {models}, webhook | {webhook_s:.2f} s | {mlflow} | {s3_calls} |"
        )
        daemon.stop()
    finally:
        mlflow_proxy.stop()
        s3_proxy.stop()
    return (
        "\n".join(
            [
                f"### Daemon over {models} registered models (requests counted by proxies)",
                "",
                "| what | time | MLflow requests | S3 requests |",
                "|---|---|---|---|",
                *lines,
                "",
                f"At rest: RSS {max(rss, rss2):.0f} MB and {idle:.1f}% of a core at "
                "poll_interval 5s; "
                f"RSS {max(rss30, rss30b):.0f} MB and {idle30:.1f}% of a core at poll_interval 30s "
                "(CPU over 60 s from /proc).",
            ]
        )
        + "\n"
    )
