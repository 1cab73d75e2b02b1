"""The long-running process: the reconciler, its HTTP server and signal handling."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import signal
import socket
from collections.abc import Callable

from syncd.app.runtime import open_runtime
from syncd.app.web import serve
from syncd.errors import ConfigError, SyncdError
from syncd.metrics import Metrics
from syncd.reconcile.daemon import Daemon
from syncd.settings import Settings

__all__ = ["check_port_free", "raise_open_file_limit", "run_service"]

log = logging.getLogger(__name__)


def _port_problem(host: str, port: int, exc: OSError, key: str) -> SyncdError:
    if exc.errno == errno.EADDRINUSE:
        return SyncdError(
            f"port {port} on {host} is already in use (another syncd, or Jupyter?): "
            f"choose another with {key}"
        )
    return SyncdError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (see {key})")


def check_port_free(host: str, port: int, key: str) -> None:
    """Fail at once, before any polling, when the HTTP port cannot be had.

    Binds the way aiohttp will (SO_REUSEADDR), so a port in TIME_WAIT is not a false alarm.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise _port_problem(host, port, exc, key) from exc


def raise_open_file_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard limit (often 1,024 of 524,288 in a
    container): S3 connections, the dataset's files and the HTTP port share it. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    log.debug("open-file limit: %d", soft)
    return soft


async def run_service(
    settings: Settings,
    *,
    exit_when_ready: bool = False,
    on_ready: Callable[[Daemon], None] | None = None,
) -> Daemon:
    """Run until SIGTERM/SIGINT (or, with `exit_when_ready`, the first complete pass).

    Cancellation reaches every sync in flight; each removes its staging folder on the way
    out, so nothing half-built is ever published and the exit is clean.
    """
    if not settings.targets:
        raise ConfigError("no targets configured: add at least one under `targets:`")
    raise_open_file_limit()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    metrics = Metrics()
    async with open_runtime(settings, metrics) as runtime:
        daemon = Daemon(settings, runtime.registry, runtime.syncer, metrics)
        runner = None
        if settings.http.enabled:
            try:
                runner = await serve(daemon, settings.http.host, settings.http.port)
            except OSError as exc:  # taken between the check at start and now
                raise _port_problem(
                    settings.http.host, settings.http.port, exc, "http.port"
                ) from exc
            log.info("serving on http://%s:%d/", settings.http.host, settings.http.port)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, daemon.hangup)
        work = asyncio.create_task(daemon.run(), name="syncd-daemon")
        waits = {work, asyncio.create_task(stop.wait())}
        announce = None
        if on_ready is not None:
            callback = on_ready

            async def ready_then_tell() -> None:
                await daemon.ready.wait()
                callback(daemon)

            announce = asyncio.create_task(ready_then_tell())
        if exit_when_ready:
            waits.add(announce or asyncio.create_task(daemon.ready.wait()))
        try:
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if announce is not None and announce not in done:
                announce.cancel()
            if work in done:
                work.result()  # the daemon only ends by failing: surface why
            await asyncio.gather(work, return_exceptions=True)
            log.info("stopped")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if runner is not None:
                await runner.cleanup()
    return daemon
