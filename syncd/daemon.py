"""The reconciler: desired state from the registry, actual state on disk, a key queue between."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from syncd.errors import SyncdError
from syncd.localstore import LocalStore
from syncd.metrics import Metrics
from syncd.registry import DesiredModel, Registry
from syncd.settings import Settings, TargetSettings
from syncd.syncer import Syncer, SyncProgress

__all__ = ["Daemon", "Key", "WorkQueue"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Key:
    """One unit of work: a run folder under one target's root."""

    target: str
    run_id: str


class WorkQueue:
    """A FIFO of keys where a key is queued at most once.

    A key added while it is being worked on is marked dirty and queued again when that work
    ends, so a trigger that arrives mid-sync is never lost (client-go's workqueue semantics).
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()

    def add(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def get(self) -> Key:
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)
        self._queue.task_done()

    async def join(self) -> None:
        await self._queue.join()

    def __len__(self) -> int:
        return len(self._queued) + len(self._active)


State = Literal["pending", "syncing", "synced", "failed"]


@dataclass
class FolderStatus:
    """What the status page and /api/status show for one wanted folder."""

    target: str
    model: str
    selector: str
    version: str
    run_id: str
    state: State = "pending"
    error: str | None = None
    updated_at: float = field(default_factory=time.time)
    progress: SyncProgress | None = None
    last_result: str | None = None

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "target": self.target,
            "model": self.model,
            "selector": self.selector,
            "version": self.version,
            "run_id": self.run_id,
            "state": self.state,
            "error": self.error,
            "updated_at": self.updated_at,
            "last_result": self.last_result,
        }
        if self.progress is not None and self.state == "syncing":
            elapsed = max(time.monotonic() - self.progress.started, 1e-6)
            document["progress"] = {
                "done_bytes": self.progress.done_bytes,
                "total_bytes": self.progress.total_bytes,
                "done_files": self.progress.done_files,
                "total_files": self.progress.total_files,
                "bytes_per_second": self.progress.done_bytes / elapsed,
            }
        return document


class Daemon:
    """Polls the registry and keeps every target's folders in place."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        syncer: Syncer,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._registry = registry
        self._syncer = syncer
        self._targets = {target.name: target for target in settings.targets}
        self._stores = {target.name: LocalStore(target.root) for target in settings.targets}
        self._queue = WorkQueue()
        self._wake = asyncio.Event()
        self._desired: dict[Key, DesiredModel] = {}
        self.folders: dict[Key, FolderStatus] = {}
        self.target_errors: dict[str, str | None] = {name: None for name in self._targets}
        self.model_errors: dict[tuple[str, str], str] = {}
        self.ready = asyncio.Event()
        self.passes = 0

    def wake(self) -> None:
        """Ask for a registry poll now (a webhook, SIGHUP)."""
        self._wake.set()

    async def run(self) -> None:
        """Run until cancelled: the poll loop and the workers, in one task group."""
        for store in self._stores.values():
            store.prepare()
        async with asyncio.TaskGroup() as group:
            for index in range(self.settings.max_parallel_syncs):
                group.create_task(self._worker(), name=f"syncd-worker-{index}")
            group.create_task(self._poll_loop(), name="syncd-poll")

    async def _poll_loop(self) -> None:
        while True:
            await self.poll_once()
            if not self.ready.is_set():
                asyncio.get_running_loop().create_task(self._mark_ready_when_idle())
            try:
                # Any trigger (webhook, signal) ends the sleep early; the newest wake wins.
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _mark_ready_when_idle(self) -> None:
        await self._queue.join()
        if not self.ready.is_set():
            log.info("first reconcile pass done: %d folder(s) wanted", len(self._desired))
            self.ready.set()

    async def poll_once(self) -> None:
        """Read what every target wants and queue each wanted folder for a check."""
        for name, target in self._targets.items():
            started = time.monotonic()
            try:
                state = await self._registry.desired(target)
            except SyncdError as exc:
                # Keep the last known desired state: a registry outage must not drop folders.
                self.metrics.registry_polls.labels(target=name, result="error").inc()
                self.target_errors[name] = str(exc)
                log.warning("%s: registry poll failed: %s", name, exc)
                continue
            finally:
                self.metrics.registry_poll_duration.labels(target=name).observe(
                    time.monotonic() - started
                )
            self.metrics.registry_polls.labels(target=name, result="success").inc()
            self.target_errors[name] = None
            self._apply(target, state.models)
            self.model_errors = {
                key: value for key, value in self.model_errors.items() if key[0] != name
            }
            for model, error in state.errors.items():
                self.model_errors[(name, model)] = str(error)
                log.error("%s: %s", name, error)
            self.metrics.resolution_errors.labels(target=name).set(len(state.errors))
        self.passes += 1

    def _apply(self, target: TargetSettings, models: list[DesiredModel]) -> None:
        wanted = {Key(target.name, desired.run_id): desired for desired in models}
        for key in [key for key in self._desired if key.target == target.name]:
            if key not in wanted:
                del self._desired[key]
                self.folders.pop(key, None)
        for key, desired in wanted.items():
            self._desired[key] = desired
            status = self.folders.get(key)
            if status is None or status.version != desired.ref.version:
                self.folders[key] = FolderStatus(
                    key.target, desired.model, desired.ref.selector, desired.ref.version, key.run_id
                )
            self._queue.add(key)
        self._refresh_desired_info()

    def _refresh_desired_info(self) -> None:
        self.metrics.desired_info.clear()
        for key, desired in self._desired.items():
            self.metrics.desired_info.labels(
                target=key.target,
                model=desired.model,
                selector=desired.ref.selector,
                version=desired.ref.version,
                run_id=key.run_id,
            ).set(1)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            try:
                await self._ensure(key)
            finally:
                self._queue.done(key)

    async def _ensure(self, key: Key) -> None:
        desired = self._desired.get(key)
        if desired is None:
            return  # no longer wanted since it was queued
        status = self.folders[key]
        progress = SyncProgress()
        status.state, status.progress = "syncing", progress
        started = time.monotonic()
        try:
            outcome = await self._syncer.ensure(
                self._stores[key.target], key.target, desired, progress
            )
        except SyncdError as exc:
            self._failed(key, status, desired, str(exc))
            return
        except Exception as exc:  # a bug must not stop the other folders; log it loudly
            log.exception("%s: unexpected error syncing run %s", key.target, key.run_id)
            self._failed(key, status, desired, f"internal error: {type(exc).__name__}: {exc}")
            return
        finally:
            self.metrics.sync_duration.labels(target=key.target).observe(time.monotonic() - started)
        self.metrics.syncs.labels(target=key.target, result=outcome.result).inc()
        status.state, status.error, status.updated_at = "synced", None, time.time()
        status.last_result = outcome.result
        if outcome.result == "synced":
            log.info(
                "%s: %s v%s run %s in place: %d files downloaded (%d bytes), %d kept, %.1fs",
                key.target,
                desired.model,
                desired.ref.version,
                key.run_id,
                outcome.downloaded_files,
                outcome.downloaded_bytes,
                outcome.reused_files,
                time.monotonic() - started,
            )
        if all(
            folder.state == "synced" for k, folder in self.folders.items() if k.target == key.target
        ):
            self.metrics.last_success.labels(target=key.target).set(time.time())

    def _failed(self, key: Key, status: FolderStatus, desired: DesiredModel, error: str) -> None:
        self.metrics.syncs.labels(target=key.target, result="error").inc()
        status.state, status.error, status.updated_at = "failed", error, time.time()
        status.last_result = "error"
        log.error(
            "%s: %s v%s run %s failed: %s",
            key.target,
            desired.model,
            desired.ref.version,
            key.run_id,
            error,
        )

    def snapshot(self) -> dict[str, Any]:
        """The JSON behind /api/status."""
        targets = []
        for name, target in self._targets.items():
            targets.append(
                {
                    "name": name,
                    "root": str(target.root),
                    "selector": target.selector,
                    "models": target.models,
                    "error": self.target_errors.get(name),
                    "folders": [
                        status.as_json()
                        for key, status in sorted(self.folders.items())
                        if key.target == name
                    ],
                    "unresolved": {
                        model: error
                        for (target_name, model), error in sorted(self.model_errors.items())
                        if target_name == name
                    },
                }
            )
        return {"ready": self.ready.is_set(), "passes": self.passes, "targets": targets}
