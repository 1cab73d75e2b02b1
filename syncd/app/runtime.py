"""Wires the parts together from Settings: sources, engine, registry, syncer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from syncd.metrics import Metrics
from syncd.reconcile.syncer import Syncer
from syncd.remote.registry import MlflowRegistry
from syncd.remote.source import Sources
from syncd.settings import Settings
from syncd.transfer.engine import Downloader

__all__ = ["Runtime", "open_runtime"]


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    sources: Sources
    downloader: Downloader
    syncer: Syncer
    _registry: MlflowRegistry | None = None

    @property
    def registry(self) -> MlflowRegistry:
        """Created on first use: importing MLflow costs about two seconds."""
        if self._registry is None:
            sources = self.sources

            async def read_artifact(uri: str) -> bytes | None:
                return await sources.read(sources.locate(uri))

            self._registry = MlflowRegistry(
                self.settings.mlflow.tracking_uri, self.settings.resolution, read_artifact
            )
        return self._registry


@asynccontextmanager
async def open_runtime(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Runtime]:
    """Everything a daemon or a one-shot sync needs, closed on exit."""
    metrics = metrics or Metrics()
    async with Sources.open(settings) as sources:
        downloader = Downloader(settings.s3, metrics)
        try:
            yield Runtime(
                settings, metrics, sources, downloader, Syncer(sources, downloader, metrics)
            )
        finally:
            downloader.close()
