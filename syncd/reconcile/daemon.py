"""The reconciler: desired state from the registry, actual state on disk, a key queue between."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from syncd.core.retention import Unwanted, select_removals
from syncd.errors import SyncdError
from syncd.local.lock import RootLock
from syncd.local.store import LocalStore
from syncd.local.verify import RateLimiter, verify_manifest
from syncd.local.watch import RootWatcher
from syncd.metrics import FolderCollector, Metrics
from syncd.reconcile.syncer import Syncer, SyncProgress
from syncd.remote.registry import DesiredModel, DesiredState, Registry
from syncd.settings import Settings, TargetSettings

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

    def is_active(self, key: Key) -> bool:
        return key in self._active

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


State = Literal["pending", "syncing", "synced", "failed", "standby"]


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


@dataclass(frozen=True)
class Event:
    """Something a person watching the status page wants to know happened."""

    at: float
    level: Literal["info", "warning", "error"]
    target: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "level": self.level, "target": self.target, "message": self.message}


@dataclass
class RootState:
    """A dataset root: its store, its writer lock, the targets that share it."""

    store: LocalStore
    lock: RootLock
    targets: list[str]
    waiting: bool = False
    foreign: list[str] = field(default_factory=list)


class Daemon:
    """Polls the registry and keeps every target's folders in place, healing what breaks."""

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
        self._roots: dict[Path, RootState] = {}
        for target in settings.targets:
            root = Path(os.path.abspath(target.root))
            if root not in self._roots:
                self._roots[root] = RootState(LocalStore(root), RootLock(root), [])
            self._roots[root].targets.append(target.name)
        self._root_of = {name: root for root, rs in self._roots.items() for name in rs.targets}
        self._queue = WorkQueue()
        self._wake = asyncio.Event()
        self._desired: dict[Key, DesiredModel] = {}
        self._distrust: dict[Key, set[str]] = defaultdict(set)
        self._checking: set[Key] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.folders: dict[Key, FolderStatus] = {}
        self.target_errors: dict[str, str | None] = {name: None for name in self._targets}
        self.model_errors: dict[tuple[str, str], str] = {}
        self.ready = asyncio.Event()
        self.passes = 0
        self.events: deque[Event] = deque(maxlen=50)
        self.started_at = time.time()
        metrics.registry.register(FolderCollector(lambda: list(self.folders.values())))
        for name in self._targets:
            metrics.register_target(name)

    def _event(self, level: Literal["info", "warning", "error"], target: str, message: str) -> None:
        self.events.appendleft(Event(time.time(), level, target, message))

    def wake(self) -> None:
        """Ask for a registry poll now (a webhook, SIGHUP)."""
        self._wake.set()

    def webhook_received(self, description: str) -> None:
        """A verified MLflow webhook delivery: note it for people and poll now."""
        log.info("webhook: %s: polling the registry now", description)
        self.metrics.webhooks.labels(result="accepted").inc()
        self._event("info", "webhook", description)
        self.wake()

    def webhook_rejected(self, reason: str) -> None:
        """A delivery that failed its check: counted and logged, nothing else happens."""
        log.warning("webhook refused: %s", reason)
        self.metrics.webhooks.labels(result="rejected").inc()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled: every loop and worker in one task group."""
        for rs in self._roots.values():
            rs.store.prepare()
            self._try_lock(rs)
        watcher = None
        if self.settings.watch:
            watcher = RootWatcher(
                list(self._roots), self._on_local_change, asyncio.get_running_loop()
            )
            watcher.start()
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(self.settings.max_parallel_syncs):
                    group.create_task(self._worker(), name=f"syncd-worker-{index}")
                group.create_task(self._poll_loop(), name="syncd-poll")
                group.create_task(
                    self._every(self.settings.lock_retry_interval, self._retry_locks),
                    name="syncd-lock",
                )
                group.create_task(
                    self._every(self.settings.sweep_interval, self.sweep), name="syncd-sweep"
                )
                if watcher is not None:
                    guarded = watcher

                    async def guard_watcher() -> None:
                        if guarded.ensure_running():
                            await self.sweep()  # cover whatever happened while it was down

                    group.create_task(self._every(1.0, guard_watcher), name="syncd-watch-guard")
                if self.settings.deep_verify_interval:
                    group.create_task(
                        self._every(self.settings.deep_verify_interval, self.deep_verify),
                        name="syncd-deep-verify",
                    )
        finally:
            if watcher is not None:
                watcher.stop()
            for rs in self._roots.values():
                rs.lock.release()

    async def _every(self, period: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(period)
            await job()

    # ---- the writer lock ---------------------------------------------------------------------

    def _try_lock(self, rs: RootState) -> None:
        if rs.lock.try_acquire("syncd run"):
            if rs.waiting:
                log.warning("took over the writer lock of %s", rs.store.root)
                for name in rs.targets:
                    self._event("warning", name, f"took over as the writer of {rs.store.root}")
            rs.waiting = False
            rs.store.clear_staging()
            for name in rs.targets:
                self.metrics.lock_held.labels(target=name).set(1)
            for key in self._desired:
                if key.target in rs.targets:
                    self._queue.add(key)
            return
        if not rs.waiting:
            rs.waiting = True
            log.warning(
                "%s is written by %s: standing by (checking every %.0fs)",
                rs.store.root,
                rs.lock.holder(),
                self.settings.lock_retry_interval,
            )
            for name in rs.targets:
                self.metrics.lock_waits.labels(target=name).inc()
                self._event("warning", name, f"standing by: {rs.lock.holder()} writes the root")
        for name in rs.targets:
            self.metrics.lock_held.labels(target=name).set(0)

    async def _retry_locks(self) -> None:
        for rs in self._roots.values():
            if not rs.lock.held:
                self._try_lock(rs)

    def _writes(self, key: Key) -> bool:
        return self._roots[self._root_of[key.target]].lock.held

    def _enqueue(self, key: Key) -> None:
        if self._writes(key):
            self._queue.add(key)

    # ---- desired state -----------------------------------------------------------------------

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
        """Read what every target wants, queue each wanted folder, then apply retention."""
        polled: set[str] = set()
        for name, target in self._targets.items():
            started = time.monotonic()
            try:
                state = await self._registry.desired(target)
            except SyncdError as exc:
                # Keep the last known desired state: a registry outage must not drop folders.
                self.metrics.registry_polls.labels(target=name, result="error").inc()
                if self.target_errors.get(name) != str(exc):
                    self._event("error", name, f"registry poll failed: {exc}")
                self.target_errors[name] = str(exc)
                log.warning("%s: registry poll failed: %s", name, exc)
                continue
            finally:
                self.metrics.registry_poll_duration.labels(target=name).observe(
                    time.monotonic() - started
                )
            polled.add(name)
            self.metrics.registry_polls.labels(target=name, result="success").inc()
            self.target_errors[name] = None
            self._apply(target, state)
        for rs in self._roots.values():
            if rs.lock.held and set(rs.targets) <= polled:
                await asyncio.to_thread(self._collect_garbage, rs)
            rs.foreign = await asyncio.to_thread(rs.store.foreign_folders)
            for name in rs.targets:
                self.metrics.foreign_folders.labels(target=name).set(len(rs.foreign))
        self.passes += 1

    def _apply(self, target: TargetSettings, state: DesiredState) -> None:
        previous = dict(self.model_errors)
        self.model_errors = {k: v for k, v in self.model_errors.items() if k[0] != target.name}
        for model, error in state.errors.items():
            self.model_errors[(target.name, model)] = str(error)
            log.error("%s: %s", target.name, error)
            if previous.get((target.name, model)) != str(error):
                self._event("error", target.name, f"cannot resolve {model}: {error}")
        self.metrics.resolution_errors.labels(target=target.name).set(len(state.errors))
        wanted = {Key(target.name, desired.run_id): desired for desired in state.models}
        for key in [key for key in self._desired if key.target == target.name]:
            # A model that failed to resolve this time keeps what it wanted before.
            if key not in wanted and self._desired[key].model not in state.errors:
                del self._desired[key]
                self.folders.pop(key, None)
        for key, desired in wanted.items():
            self._desired[key] = desired
            status = self.folders.get(key)
            if status is None or status.version != desired.ref.version:
                self.folders[key] = FolderStatus(
                    key.target, desired.model, desired.ref.selector, desired.ref.version, key.run_id
                )
            if not self._writes(key):
                self.folders[key].state = "standby"
            self._enqueue(key)
        self.metrics.desired_info.clear()
        self.metrics.desired_version.clear()
        for key, desired in self._desired.items():
            pointer = desired.ref.selector.split(" ", 1)[-1]
            self.metrics.desired_info.labels(
                target=key.target,
                model=desired.model,
                alias=pointer,
                version=desired.ref.version,
                run_id=key.run_id,
            ).set(1)
            if desired.ref.version.isdigit():
                self.metrics.desired_version.labels(target=key.target, model=desired.model).set(
                    int(desired.ref.version)
                )

    # ---- actual state: events, sweep, deep verify --------------------------------------------

    def _on_local_change(self, root: Path, run_id: str) -> None:
        """A watchdog event under a run folder: check it locally, at once.

        Our own publication raises events too; the stat-only check finds those folders intact,
        so they cost no S3 request, while a real deletion or edit is queued straight away.
        Events for one key coalesce into one check.
        """
        rs = self._roots.get(root)
        if rs is None:
            return
        for name in rs.targets:
            key = Key(name, run_id)
            if key in self._desired and key not in self._checking:
                self._checking.add(key)
                task = asyncio.get_running_loop().create_task(self._check_locally(key, "event"))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _check_locally(self, key: Key, why: str) -> None:
        try:
            if not self._writes(key) or self._queue.is_active(key):
                return  # a sync in progress re-reads everything when it is done
            store = self._roots[self._root_of[key.target]].store
            manifest = await asyncio.to_thread(store.read_manifest, key.run_id)
            damaged = (
                await asyncio.to_thread(store.damaged, manifest) if manifest is not None else None
            )
            if manifest is None or damaged:
                log.info(
                    "%s: %s found run %s damaged: %s",
                    key.target,
                    why,
                    key.run_id,
                    damaged or "no manifest",
                )
                self._queue.add(key)
        finally:
            self._checking.discard(key)

    async def sweep(self) -> None:
        """Queue every wanted folder whose files no longer match their manifest (stat only)."""
        for key in list(self._desired):
            if key not in self._checking:
                self._checking.add(key)
                await self._check_locally(key, "sweep")

    async def deep_verify(self) -> None:
        """Re-hash every wanted folder (rate-limited); queue those with altered files."""
        limiter = RateLimiter(self.settings.deep_verify_rate)
        for key in list(self._desired):
            if not self._writes(key):
                continue
            store = self._roots[self._root_of[key.target]].store
            manifest = await asyncio.to_thread(store.read_manifest, key.run_id)
            if manifest is None:
                continue
            folder = store.run_dir(key.run_id)
            problems = await asyncio.to_thread(verify_manifest, folder, manifest, limiter)
            if not problems:
                continue
            self.metrics.deep_verify_problems.labels(target=key.target).inc(len(problems))
            desired = self._desired.get(key)
            log.warning(
                "%s: deep verify of %s v%s run %s: %s",
                key.target,
                desired.model if desired else "?",
                desired.ref.version if desired else "?",
                key.run_id,
                ", ".join(f"{p.path} ({p.reason})" for p in problems),
            )
            self._distrust[key].update(p.path for p in problems)
            self._queue.add(key)

    # ---- work --------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            try:
                await self._ensure(key)
            finally:
                self._queue.done(key)

    async def _ensure(self, key: Key) -> None:
        desired = self._desired.get(key)
        if desired is None or not self._writes(key):
            return  # no longer wanted since it was queued, or another process writes the root
        status = self.folders[key]
        progress = SyncProgress()
        status.state, status.progress = "syncing", progress
        distrust = frozenset(self._distrust.pop(key, set()))
        store = self._roots[self._root_of[key.target]].store
        started = time.monotonic()
        try:
            outcome = await self._syncer.ensure(store, key.target, desired, progress, distrust)
        except SyncdError as exc:
            self._distrust[key].update(distrust)
            self._failed(key, status, desired, str(exc))
            return
        except Exception as exc:  # a bug must not stop the other folders; log it loudly
            self._distrust[key].update(distrust)
            log.exception("%s: unexpected error syncing run %s", key.target, key.run_id)
            self._failed(key, status, desired, f"internal error: {type(exc).__name__}: {exc}")
            return
        finally:
            self.metrics.sync_duration.labels(target=key.target).observe(time.monotonic() - started)
        result = "success" if outcome.result == "synced" else outcome.result
        self.metrics.syncs.labels(target=key.target, result=result).inc()
        if desired.ref.version.isdigit():
            self.metrics.synced_version.labels(target=key.target, model=desired.model).set(
                int(desired.ref.version)
            )
        for reason in outcome.healed.values():
            self.metrics.heals.labels(target=key.target, reason=reason).inc()
        status.state, status.error, status.updated_at = "synced", None, time.time()
        status.last_result = outcome.result
        if outcome.healed:
            reasons = sorted(set(outcome.healed.values()))
            self._event(
                "warning",
                key.target,
                f"healed {desired.model} v{desired.ref.version} ({key.run_id[:8]}): "
                f"{len(outcome.healed)} file(s), {', '.join(reasons)}",
            )
        elif outcome.result == "synced":
            self._event(
                "info",
                key.target,
                f"{desired.model} v{desired.ref.version} in place ({key.run_id[:8]}): "
                f"{outcome.downloaded_files} files, {outcome.downloaded_bytes / 1e6:.1f} MB",
            )
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
        if all(f.state == "synced" for k, f in self.folders.items() if k.target == key.target):
            self.metrics.last_success.labels(target=key.target).set(time.time())

    def _failed(self, key: Key, status: FolderStatus, desired: DesiredModel, error: str) -> None:
        self.metrics.syncs.labels(target=key.target, result="error").inc()
        status.state, status.error, status.updated_at = "failed", error, time.time()
        status.last_result = "error"
        self._event("error", key.target, f"{desired.model} v{desired.ref.version} failed: {error}")
        log.error(
            "%s: %s v%s run %s failed: %s",
            key.target,
            desired.model,
            desired.ref.version,
            key.run_id,
            error,
        )

    # ---- retention ---------------------------------------------------------------------------

    def _collect_garbage(self, rs: RootState) -> None:
        """Remove folders this root's targets made and no longer want, after the grace period.

        Runs only after a poll in which every target of the root answered, so an outage or a
        model that failed to resolve never looks like "nobody wants this any more".
        """
        if not self.settings.gc:
            return
        wanted = {key.run_id for key in self._desired if key.target in rs.targets}
        failing = {model for (name, model) in self.model_errors if name in rs.targets}
        now = time.time()
        unwanted: list[Unwanted] = []
        owners: dict[str, str] = {}
        for manifest in rs.store.manifests_on_disk():
            ours = [w for w in manifest.wanted_by if w.target in rs.targets]
            if not ours:
                continue  # made by a one-shot sync or for another root's target: not ours
            models = {w.model for w in ours}
            extra = dict(manifest.extra)
            if manifest.run_id in wanted or models & failing:
                if extra.pop("unwanted_since", None) is not None:
                    rs.store.write_manifest(replace(manifest, extra=extra))
                continue
            since = extra.get("unwanted_since")
            if not isinstance(since, int | float):
                since = now
                extra["unwanted_since"] = now
                rs.store.write_manifest(replace(manifest, extra=extra))
                log.info(
                    "run %s is no longer wanted; kept for %.0fs",
                    manifest.run_id,
                    self.settings.gc_grace,
                )
            unwanted.append(Unwanted(manifest.run_id, frozenset(models), float(since)))
            owners[manifest.run_id] = f"{ours[-1].target}: {ours[-1].model} v{ours[-1].version}"
        for run_id in select_removals(
            unwanted,
            now=now,
            grace=self.settings.gc_grace,
            keep_previous=self.settings.keep_previous,
        ):
            rs.store.remove(run_id)
            target = owners[run_id].split(":", 1)[0]
            self.metrics.removed_folders.labels(target=target).inc()
            log.warning("removed run %s (%s): no target wants it", run_id, owners[run_id])
            self._event("info", target, f"removed {run_id[:8]} ({owners[run_id]}): unwanted")

    # ---- status ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The JSON behind /api/status."""
        targets = []
        for name, target in self._targets.items():
            rs = self._roots[self._root_of[name]]
            targets.append(
                {
                    "name": name,
                    "root": str(target.root),
                    "selector": target.selector,
                    "models": target.models,
                    "error": self.target_errors.get(name),
                    "writer": rs.lock.held,
                    "lock_holder": None if rs.lock.held else rs.lock.holder(),
                    "foreign_folders": rs.foreign,
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
        return {
            "ready": self.ready.is_set(),
            "passes": self.passes,
            "started_at": self.started_at,
            "targets": targets,
            "events": [event.as_json() for event in self.events],
        }
