"""Running daemons in tests: in-process with a free HTTP port, or as real `syncd run` processes."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from syncd.app.runtime import open_runtime
from syncd.app.web import serve
from syncd.metrics import Metrics
from syncd.reconcile.daemon import Daemon
from syncd.settings import Settings
from tests.support.cli import WAIT


async def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


async def more_passes(daemon: Daemon, count: int = 3) -> None:
    """`count` more registry polls and sweeps, each waited for until nothing is left queued,
    syncing or firing hooks: what a "nothing more happened" check waits on instead of a fixed
    sleep (driven here, so it holds whatever the poll interval)."""
    for _ in range(count):
        await daemon.poll_once()
        await daemon.sweep()
        await daemon.idle()


def wait_until(check: Callable[[], bool], what: str, limit: float = WAIT) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Daemon, str]]:
    """A daemon with its HTTP server on a free port, stopped (cancelled) on exit."""
    metrics = Metrics()
    async with open_runtime(settings, metrics) as runtime:
        daemon = Daemon(settings, runtime.registry, runtime.syncer, metrics)
        runner = await serve(daemon, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        task = asyncio.create_task(daemon.run())
        try:
            yield daemon, f"http://127.0.0.1:{port}"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await runner.cleanup()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


async def fetch(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(get, url)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def scraped(text: str, line_start: str) -> float | None:
    """A value from Prometheus text: the first line starting with `line_start`."""
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def start_process(
    config: Path,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    nofile: tuple[int, int] | None = None,
) -> subprocess.Popen[bytes]:
    """`syncd run --config FILE` as a real child process, output to `log`; `nofile` is the
    (soft, hard) RLIMIT_NOFILE it starts with, as `ulimit -n` would set it."""

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    return subprocess.Popen(
        [sys.executable, "-m", "syncd.app.cli", "run", "--config", str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=limit if nofile is not None else None,
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait (SIGKILL if it does not end in time)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def daemon_config(
    tmp_path: Path, root: Path, port: int, model: str, tracking_uri: str, **extra: Any
) -> Path:
    """A `syncd run` config file: one target serving `model` from `root`, polled twice a
    second, the HTTP port on loopback."""
    target = {"name": "prod", "root": str(root), "alias": "production", "models": [model]}
    data = {
        "poll_interval": "0.5s",
        "targets": [target],
        "http": {"host": "127.0.0.1", "port": port},
        "mlflow": {"tracking_uri": tracking_uri},
        **extra,
    }
    return write_config(tmp_path / "syncd.yaml", data)
