"""The controller: desired state from the registry, actual state on disk, a key queue between.

Sources only enqueue or check: the poll (one registry listing for every target), a webhook
(refreshes the one model it names), watchdog events and the sweep (stat-only local checks),
the remote check (one folder at a time against its source listing), deep verify, the lock
retry. Workers take keys off the queue and call the syncer; a failed key comes back after a
backoff. The status board observes outcomes; retention runs as its own step after a poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from syncd.core.desired import RegisteredModel, matches, missing_names
from syncd.core.manifest import WantedBy
from syncd.errors import SyncdError, is_terminal
from syncd.local.store import LocalStore
from syncd.local.verify import RateLimiter, verify_manifest
from syncd.local.watch import RootWatcher
from syncd.metrics import FolderCollector, Metrics
from syncd.reconcile.hooks import HookRunner, fire_once
from syncd.reconcile.queue import Key, WorkQueue
from syncd.reconcile.retention import collect_garbage
from syncd.reconcile.roots import Roots, RootState
from syncd.reconcile.status import Event, FolderStatus, Readiness, StatusBoard
from syncd.reconcile.syncer import Syncer, SyncOutcome, SyncProgress
from syncd.remote.registry import DesiredModel, DesiredState, MlflowRegistry
from syncd.settings import Settings, TargetSettings

__all__ = ["Daemon", "Event", "FolderStatus", "Key", "WorkQueue"]

log = logging.getLogger(__name__)

Verdict = Literal["in_place", "needs_sync"]


def _verdict(store: LocalStore, key: Key, wanted: DesiredModel) -> Verdict:
    """Stat-only: the folder is complete, untouched and recorded as wanted this way."""
    manifest = store.read_manifest(key.run_id)
    if manifest is None or store.damaged(manifest) or store.damage.has(key.run_id):
        return "needs_sync"
    pointer = WantedBy(key.target, wanted.model, wanted.ref.selector, wanted.ref.version)
    return "in_place" if pointer in manifest.wanted_by else "needs_sync"


class Daemon:
    """Polls the registry and keeps every target's folders in place, healing what breaks."""

    def __init__(
        self,
        settings: Settings,
        registry: MlflowRegistry,
        syncer: Syncer,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._registry = registry
        self._syncer = syncer
        self._targets = {target.name: target for target in settings.targets}
        self._queue = WorkQueue()
        self._wake = asyncio.Event()
        self._desired: dict[Key, DesiredModel] = {}
        self._checking: set[Key] = set()
        self._hooks_looked_at: set[Key] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._last_poll: float | None = None
        self.status = StatusBoard(metrics, list(self._targets))
        self._roots = Roots(settings.targets, metrics, self.status, settings.lock_retry_interval)
        self._hooks = HookRunner(settings.domino)
        self.ready = asyncio.Event()
        self.passes = 0
        self.started_at = time.time()
        metrics.registry.register(FolderCollector(lambda: list(self.status.folders.values())))
        for name, target in self._targets.items():
            metrics.register_target(name)
            for hook in target.after_sync:
                for result in ("success", "error"):
                    metrics.hooks.labels(target=name, kind=hook.kind, result=result)

    # What the page, the API and tests read.
    @property
    def folders(self) -> dict[Key, FolderStatus]:
        return self.status.folders

    @property
    def events(self) -> Iterable[Event]:
        return self.status.events

    def readiness(self) -> Readiness:
        return self.status.readiness(self.ready.is_set())

    def wake(self) -> None:
        """Ask for a registry poll now (a webhook that names no model)."""
        self._wake.set()

    def hangup(self) -> None:
        """SIGHUP: an operator asks again: poll now, and retry every failed folder at once,
        terminal ones included."""
        retried = self._queue.retry_now()
        if retried:
            log.info("SIGHUP: retrying %d failed folder(s) now", len(retried))
        self._wake.set()

    def webhook_received(self, description: str, model: str | None = None) -> None:
        """A verified MLflow webhook delivery: refresh the model it names (or poll now)."""
        log.info("webhook: %s", description)
        self.metrics.webhooks.labels(result="accepted").inc()
        self.status.event("info", "webhook", description)
        if model is None:
            self.wake()
        else:
            self._spawn(self.refresh_model(model))

    def webhook_rejected(self, reason: str) -> None:
        """A delivery that failed its check: counted and logged, nothing else happens."""
        log.warning("webhook refused: %s", reason)
        self.metrics.webhooks.labels(result="rejected").inc()

    def _spawn(self, job: Awaitable[None]) -> None:
        async def run() -> None:
            await job

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled: every loop and worker in one task group."""
        for rs in self._roots:
            await asyncio.to_thread(rs.store.prepare)
        await asyncio.to_thread(self._roots.load_resolutions, self._registry.cache)
        for rs in self._roots:
            await self._try_lock(rs)
        watcher = None
        if self.settings.watch:
            watcher = RootWatcher(
                self._roots.paths, self._on_local_change, asyncio.get_running_loop()
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
                group.create_task(self._remote_checks(), name="syncd-remote-check")
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
            for task in list(self._background):
                task.cancel()
            self._roots.release_all()

    async def _every(self, period: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(period)
            await job()

    # ---- the writer lock ---------------------------------------------------------------------

    async def _try_lock(self, rs: RootState) -> None:
        if await self._roots.try_lock(rs):
            mine = [key for key in self._desired if key.target in rs.targets]
            if mine:
                self._spawn(self._check_many(mine))

    async def _retry_locks(self) -> None:
        for rs in self._roots:
            if not rs.lock.held:
                await self._try_lock(rs)

    def _root(self, key: Key) -> RootState:
        return self._roots.of(key.target)

    def _writes(self, key: Key) -> bool:
        return self._roots.writes(key.target)

    # ---- desired state -----------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            await self.poll_once()
            if not self.ready.is_set():
                self._spawn(self._mark_ready_when_idle())
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
        """One listing of the registry for every target; new pointers are checked or queued."""
        started = time.monotonic()
        try:
            models: list[RegisteredModel] | None = await self._registry.list_models()
        except SyncdError as exc:
            models = None
            for name in self._targets:
                self.status.poll_failed(name, str(exc))
        polled: set[str] = set()
        changed: list[Key] = []
        if models is not None:
            for name, target in self._targets.items():
                try:
                    state = await self._registry.wanted(target, models)
                except SyncdError as exc:
                    self.status.poll_failed(name, str(exc))
                    continue
                self.status.poll_succeeded(name)
                self.status.missing_models(
                    name, missing_names(target.models, (m.name for m in models))
                )
                polled.add(name)
                changed += self._apply(target, state, models, scope=None)
        for name in self._targets:
            self.metrics.registry_poll_duration.labels(target=name).observe(
                time.monotonic() - started
            )
        await self._check_many(changed)
        await self._roots.save_resolutions(self._registry.cache)
        await self._after_poll(polled)
        self._last_poll = time.time()
        self.passes += 1

    async def refresh_model(self, name: str) -> None:
        """A webhook named this model: read it alone and act on its pointers at once."""
        try:
            model = await self._registry.get_model(name)
        except SyncdError as exc:
            log.warning("webhook refresh of %s failed (%s): polling instead", name, exc)
            self.wake()
            return
        models = [model] if model is not None else []
        changed: list[Key] = []
        for target in self._targets.values():
            if not matches(name, target.models):
                continue
            try:
                state = await self._registry.wanted(target, models)
            except SyncdError as exc:
                log.warning("webhook refresh of %s failed (%s): polling instead", name, exc)
                self.wake()
                return
            changed += self._apply(target, state, models, scope={name})
        await self._check_many(changed)
        await self._roots.save_resolutions(self._registry.cache)

    def _apply(
        self,
        target: TargetSettings,
        state: DesiredState,
        models: list[RegisteredModel],
        scope: set[str] | None,
    ) -> list[Key]:
        """Take a target's desired state (for the models in `scope`, or all of them).

        Returns the keys whose pointer is new or moved: those need a look. Keys that did not
        change cost nothing: the sweep, the watcher and the remote check look after them.
        """

        def in_scope(model: str) -> bool:
            return scope is None or model in scope

        errors = {model: str(error) for model, error in state.errors.items()}
        self.status.resolution_errors(target.name, errors, scope)
        wanted = {Key(target.name, d.run_id): d for d in state.models}
        for key in [k for k, d in self._desired.items() if k.target == target.name]:
            model = self._desired[key].model
            # A model that failed to resolve this time keeps what it wanted before.
            if in_scope(model) and key not in wanted and model not in state.errors:
                del self._desired[key]
                self.status.folders.pop(key, None)
                self._queue.forget(key)
        updated = {m.name: m.updated_at for m in models}
        changed = []
        for key, desired in wanted.items():
            self._desired[key] = desired
            status = self.status.folders.get(key)
            same = status is not None and (status.version, status.selector, status.role) == (
                desired.ref.version,
                desired.ref.selector,
                desired.role,
            )
            if not same:
                fresh = FolderStatus(
                    key.target,
                    desired.model,
                    desired.ref.selector,
                    desired.ref.version,
                    key.run_id,
                    role=desired.role,
                )
                if self._last_poll is not None and desired.role == "serving":
                    fresh.moved_at = self._moved_at(updated.get(desired.model))
                self.status.folders[key] = fresh
                self._queue.forget(key)  # a new desired state: a fresh start, backoff and all
                changed.append(key)
            elif status is not None and status.state == "failed" and self._writes(key):
                self._queue.add(key)  # a poll is a good moment to try a failing key again
            if not self._writes(key):
                self.status.folders[key].state = "standby"
        self.status.desired_changed(self._desired)
        return changed

    def _moved_at(self, registry_time: float | None) -> float:
        """When the pointer moved: the registry's own time when it is plausible, else now."""
        now = time.time()
        floor = (self._last_poll or now) - self.settings.poll_interval - 60
        if registry_time is not None and floor <= registry_time <= now:
            return registry_time
        return now

    async def _after_poll(self, polled: set[str]) -> None:
        for rs in self._roots:
            if rs.lock.held and self.settings.gc and set(rs.targets) <= polled:
                wanted = {key.run_id for key in self._desired if key.target in rs.targets}
                failing = {m for (name, m) in self.status.model_errors if name in rs.targets}
                removals = await asyncio.to_thread(
                    collect_garbage,
                    rs.store,
                    set(rs.targets),
                    wanted,
                    failing,
                    grace=self.settings.gc_grace,
                    keep_previous=self.settings.keep_previous,
                )
                for removal in removals:
                    self.metrics.removed_folders.labels(target=removal.target).inc()
                    self.status.event(
                        "info",
                        removal.target,
                        f"removed {removal.run_id[:8]} ({removal.owner}): unwanted",
                    )
            rs.foreign = await asyncio.to_thread(rs.store.foreign_folders)
            for name in rs.targets:
                self.metrics.foreign_folders.labels(target=name).set(len(rs.foreign))

    # ---- actual state: local checks, events, sweep, remote check, deep verify ----------------

    async def _check_many(self, keys: list[Key]) -> None:
        """Stat-only checks of many folders in one worker thread; queue what is not in place."""
        mine = [key for key in keys if key in self._desired and self._writes(key)]
        if not mine:
            return
        wanted = {key: self._desired[key] for key in mine}

        def inspect() -> dict[Key, Verdict]:
            return {key: _verdict(self._root(key).store, key, d) for key, d in wanted.items()}

        for key, verdict in (await asyncio.to_thread(inspect)).items():
            self._act_on(key, verdict, "check")

    def _act_on(self, key: Key, verdict: Verdict, why: str) -> None:
        desired = self._desired.get(key)
        if desired is None or self._queue.is_active(key):
            return  # a sync in progress re-reads everything when it is done
        if verdict == "in_place":
            status = self.status.folders[key]
            if status.state != "failed":
                moved = status.moved_at is not None
                self.status.in_place(key, desired, None)
                if moved:  # e.g. promoted to a pre-staged version: in place for serving now
                    self._after_in_place(key, desired, None)
                elif key not in self._hooks_looked_at:
                    # Found in place at start-up: a move made while syncd was down still
                    # fires (the manifests say which move came last); nothing else does.
                    self._after_in_place(key, desired, None, adopt=True)
            return
        log.info("%s: %s: run %s needs a sync", key.target, why, key.run_id)
        self._queue.add(key)

    def _on_local_change(self, root: Path, run_id: str) -> None:
        """A watchdog event under a run folder: check it locally, at once.

        Our own publication raises events too; the stat-only check finds those folders intact,
        so they cost no S3 request, while a real deletion or edit is queued straight away.
        Events for one key coalesce into one check.
        """
        rs = self._roots.at(root)
        if rs is None:
            return
        for name in rs.targets:
            key = Key(name, run_id)
            if key in self._desired and key not in self._checking:
                self._checking.add(key)
                self._spawn(self._check_locally(key, "event"))

    async def _check_locally(self, key: Key, why: str) -> None:
        try:
            desired = self._desired.get(key)
            if desired is None or not self._writes(key) or self._queue.is_active(key):
                return
            store = self._root(key).store
            verdict = await asyncio.to_thread(_verdict, store, key, desired)
            self._act_on(key, verdict, why)
        finally:
            self._checking.discard(key)

    async def sweep(self) -> None:
        """Queue every wanted folder whose files no longer match their manifest (stat only)."""
        for key in list(self._desired):
            if key not in self._checking:
                self._checking.add(key)
                await self._check_locally(key, "sweep")

    async def _remote_checks(self) -> None:
        """Compare each folder in place with its source listing, one at a time, spread evenly
        over `remote_check_interval`: the only S3 requests of an idle daemon."""
        while True:
            keys = sorted(k for k, f in self.status.folders.items() if f.state == "synced")
            if not keys:
                await asyncio.sleep(min(self.settings.remote_check_interval, 60.0))
                continue
            pause = self.settings.remote_check_interval / len(keys)
            for key in keys:
                await asyncio.sleep(pause)
                if key in self._desired and self._writes(key):
                    self._queue.add(key)

    async def deep_verify(self) -> None:
        """Re-hash every wanted folder (rate-limited); queue those with altered files."""
        limiter = RateLimiter(self.settings.deep_verify_rate)
        for key in list(self._desired):
            if not self._writes(key):
                continue
            store = self._root(key).store
            manifest = await asyncio.to_thread(store.read_manifest, key.run_id)
            if manifest is None:
                continue
            folder = store.run_dir(key.run_id)
            problems = await asyncio.to_thread(verify_manifest, folder, manifest, limiter)
            desired = self._desired.get(key)
            if not problems or desired is None:
                continue
            self.metrics.deep_verify_problems.labels(target=key.target).inc(len(problems))
            log.warning(
                "%s: deep verify of %s v%s run %s: %s",
                key.target,
                desired.model,
                desired.ref.version,
                key.run_id,
                ", ".join(p.describe() for p in problems),
            )
            # Recorded in the root, so the finding outlives a restart or a failed repair.
            found = {p.path: p.spans or None for p in problems}
            await asyncio.to_thread(store.damage.record, key.run_id, found)
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
        status = self.status.folders[key]
        progress = SyncProgress()
        status.state, status.progress = "syncing", progress
        store = self._root(key).store
        started = time.monotonic()
        try:
            outcome = await self._syncer.ensure(store, key.target, desired, progress)
        except Exception as exc:
            if isinstance(exc, SyncdError):
                error = str(exc)
            else:  # a bug must not stop the other folders; log it loudly
                log.exception("%s: unexpected error syncing run %s", key.target, key.run_id)
                error = f"internal error: {type(exc).__name__}: {exc}"
            self.metrics.sync_duration.labels(target=key.target).observe(time.monotonic() - started)
            if is_terminal(exc):
                # No retry can change this: parked until the pointer moves or SIGHUP.
                self._queue.park(key)
                self.status.failed(key, desired, error, None)
            else:
                self.status.failed(key, desired, error, self._queue.add_rate_limited(key))
            return
        seconds = time.monotonic() - started
        if outcome.result == "synced":
            self.metrics.sync_duration.labels(target=key.target).observe(seconds)
        self._queue.forget(key)
        moved = status.moved_at is not None
        self.status.in_place(key, desired, replace(outcome, seconds=seconds))
        if (outcome.result == "synced" and not outcome.healed) or moved:
            self._after_in_place(key, desired, replace(outcome, seconds=seconds))

    # ---- after a sync ------------------------------------------------------------------------

    def _after_in_place(
        self,
        key: Key,
        desired: DesiredModel,
        outcome: SyncOutcome | None,
        *,
        adopt: bool = False,
    ) -> None:
        """Run the target's hooks for a pointer move that put a version in place for serving.

        Never for a heal or a no-op (the callers see to that), nor for a pre-staged version;
        once per move: the newest move is recorded in the manifests, so a daemon restart or a
        second path to the same state fires nothing, while a rollback to a kept folder does.
        """
        self._hooks_looked_at.add(key)
        hooks = self._targets[key.target].after_sync
        if not hooks or desired.role != "serving":
            return
        self._spawn(self._run_hooks(key, desired, outcome, adopt))

    async def _run_hooks(
        self, key: Key, desired: DesiredModel, outcome: SyncOutcome | None, adopt: bool
    ) -> None:
        store = self._root(key).store
        seconds = outcome.seconds if outcome is not None else 0.0
        hooks = self._targets[key.target].after_sync
        results = await fire_once(
            self._hooks, store, key.target, hooks, desired, seconds, adopt=adopt
        )
        if results is not None:
            self.status.hooks_ran(key, desired, results)

    # ---- status ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The JSON behind /api/status."""
        targets = []
        for name, target in self._targets.items():
            rs = self._roots.of(name)
            targets.append(
                {
                    "name": name,
                    "root": str(target.root),
                    "selector": target.selector,
                    "prefetch": target.prefetch,
                    "models": target.models,
                    "error": self.status.target_errors.get(name),
                    "error_since": self.status.target_error_since.get(name),
                    "writer": rs.lock.held,
                    "lock_holder": None if rs.lock.held else rs.lock.holder(),
                    "foreign_folders": rs.foreign,
                    "folders": [
                        status.as_json()
                        for key, status in sorted(self.status.folders.items())
                        if key.target == name
                    ],
                    "missing_models": self.status.missing.get(name, {}),
                    "endpoints_left_stopped": {
                        endpoint: detail
                        for (target_name, endpoint), detail in sorted(
                            self.status.left_stopped.items()
                        )
                        if target_name == name
                    },
                    "unresolved": {
                        model: error
                        for (target_name, model), error in sorted(self.status.model_errors.items())
                        if target_name == name
                    },
                }
            )
        readiness = self.readiness()
        return {
            "ready": self.ready.is_set(),
            "readiness": {
                "ready": readiness.ready,
                "state": readiness.state,
                "detail": readiness.detail,
            },
            "passes": self.passes,
            "started_at": self.started_at,
            "targets": targets,
            "events": [event.as_json() for event in self.status.events],
        }
