"""Wires the parts together from Settings: sources, engine, registry, syncer."""

from __future__ import annotations

import gc
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.core.desired import Registry
from syncd.errors import ConfigError, describe_os_error
from syncd.metrics import Metrics
from syncd.reconcile.syncer import Syncer
from syncd.remote.mlflow_rest import MlflowRestClient, needs_mlflow_client
from syncd.remote.registry import MlflowRegistry
from syncd.remote.source import Sources
from syncd.settings import MlflowSettings, Settings
from syncd.transfer.engine import Downloader

__all__ = ["Runtime", "imports_done", "open_runtime", "require_registry", "require_roots"]

log = logging.getLogger(__name__)


def imports_done() -> None:
    """Start-up's imports are over: what they made is frozen out of the collector's sight and
    the collector is back on (`main` turned it off: importing MLflow's client, aiobotocore and
    pydantic allocates millions of objects and no garbage, and the passes over them cost about
    a tenth of the import time: `python -m tests.bench.micro`)."""
    gc.freeze()
    gc.enable()


def require_registry(settings: Settings) -> str:
    """The tracking URI, or one clear line: without it MLflow's client would quietly create a
    store in the working directory and then report every model as missing."""
    uri = settings.mlflow.tracking_uri
    if not uri:
        raise ConfigError(
            "no MLflow registry configured: set MLFLOW_TRACKING_URI "
            "(or mlflow.tracking_uri in --config) to the server's http(s):// URL"
        )
    return uri


def require_roots(settings: Settings, config: Path | None) -> None:
    """Every target's root can be created and written, or one line per root that cannot,
    naming its key: found before anything is served, not at the first sync (a root under
    /proc, on a read-only volume, or a file where a folder should be)."""
    where = str(config) if config is not None else "settings"
    problems = []
    for index, target in enumerate(settings.targets):
        root = Path(target.root)
        try:
            (root / ".syncd").mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".probe-", dir=root / ".syncd")
            os.close(handle)
            os.unlink(probe)
        except OSError as exc:
            said = describe_os_error(OSError(exc.errno, exc.strerror))  # the path is said
            problems.append(f"{where}: targets.{index}.root: cannot write {root}: {said}")
    if problems:
        raise ConfigError("\n".join(problems))


def _configure_mlflow_client(mlflow: MlflowSettings) -> None:
    # MLflow's client takes its timeout, retries and credentials only from environment
    # variables, so the settings are handed over here, in the one place that does it.
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(mlflow.timeout))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(mlflow.max_retries)
    for variable, value in (
        ("MLFLOW_TRACKING_TOKEN", mlflow.token),
        ("MLFLOW_TRACKING_USERNAME", mlflow.username),
        ("MLFLOW_TRACKING_PASSWORD", mlflow.password),
    ):
        if value:
            os.environ[variable] = value


def _registry_client(uri: str, mlflow: MlflowSettings) -> Any | None:
    """syncd's own REST reads unless MLflow's client is asked for or would send more than
    they do (an auth or header plugin); None: MLflow's client, imported then (~0.7 s)."""
    if mlflow.client == "mlflow":
        _configure_mlflow_client(mlflow)
        return None
    why = needs_mlflow_client() if mlflow.client == "auto" else None
    if why is not None:
        log.info("reading the registry through MLflow's client (%s)", why)
        _configure_mlflow_client(mlflow)
        return None
    return MlflowRestClient(uri, mlflow)


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    sources: Sources
    downloader: Downloader
    syncer: Syncer
    _registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        """Created on first use (MLflow's client, where it is the one used, costs 0.7-1.1 s to
        import: `python -X importtime -c "import mlflow"`)."""
        if self._registry is None:
            uri = require_registry(self.settings)
            self._registry = MlflowRegistry(
                uri,
                self.settings.resolution,
                self.sources.read_uri,
                client=_registry_client(uri, self.settings.mlflow),
                on_request=self.metrics.registry_requests.inc,
            )
            imports_done()  # the registry client was the last import
        return self._registry


@asynccontextmanager
async def open_runtime(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Runtime]:
    """Everything a daemon or a one-shot sync needs, closed on exit."""
    metrics = metrics or Metrics()
    async with Sources.open(settings, metrics) as sources:
        downloader = Downloader(settings.s3, sources, metrics)
        try:
            yield Runtime(
                settings, metrics, sources, downloader, Syncer(sources, downloader, metrics)
            )
        finally:
            downloader.close()
