"""The triggers: everything that notices a folder may need work. Each only updates the
desired state, enqueues a key or runs a local check; the controller does the work.

- the poll: one registry listing for every target (and a webhook's refresh of one model);
- watchdog events and the sweep: stat-only local checks;
- the remote check: one folder in place at a time, queued to compare with its source;
- deep verify: re-hashes folders, records what it finds, queues them;
- the lock retry: a root another process wrote, taken over when it frees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from syncd.core.desired import DesiredState, RegisteredModel, Registry, matches, missing_names
from syncd.errors import ResolutionError, SyncdError, describe_os_error
from syncd.local.quarantine import prune_quarantine
from syncd.local.verify import RateLimiter, verify_manifest
from syncd.metrics import Metrics
from syncd.reconcile.controller import Controller
from syncd.reconcile.pointers import Pointers
from syncd.reconcile.queue import Key
from syncd.reconcile.retention import collect_garbage
from syncd.reconcile.roots import Roots, RootState
from syncd.reconcile.status import StatusBoard
from syncd.settings import Settings, TargetSettings

__all__ = ["Triggers", "every", "guarded"]

log = logging.getLogger(__name__)


async def every(
    period: float, job: Callable[[], Awaitable[None]], metrics: Metrics | None = None
) -> None:
    """Run `job` every `period` seconds for ever; a local failure of one run is logged,
    counted and retried at the next, never the end of the daemon."""
    while True:
        await asyncio.sleep(period)
        await guarded(job, metrics)


async def guarded(job: Callable[[], Awaitable[None]], metrics: Metrics | None) -> None:
    """`job()`, with an OSError (EMFILE under a flood of connections, EIO on a failing disk,
    ENOSPC) logged and counted instead of ending the task group and with it the daemon."""
    try:
        await job()
    except OSError as exc:
        name = getattr(job, "__name__", "task")
        log.error("%s failed: %s; retried at its next turn", name, describe_os_error(exc))
        if metrics is not None:
            metrics.background_errors.labels(task=name).inc()


class Triggers:
    """The registry poll and the local and remote checks, feeding one controller."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        pointers: Pointers,
        controller: Controller,
        roots: Roots,
        status: StatusBoard,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._targets = {target.name: target for target in settings.targets}
        self._registry = registry
        self._pointers = pointers
        self._controller = controller
        self._roots = roots
        self._status = status
        self._metrics = metrics
        self.woken = asyncio.Event()
        # One registry read taken at a time: a poll's listing read before a webhook's fresher
        # answer must not be applied after it (the simulation found a stale poll moving a
        # pointer back, and hooks firing for the version the alias had left).
        self._reading = asyncio.Lock()
        self.ready = asyncio.Event()
        self.passes = 0
        self._damage_seen: dict[Path, set[str]] = {}  # per root: damage records already acted on

    # ---- the registry --------------------------------------------------------------------------

    async def poll_loop(self) -> None:
        while True:
            await guarded(self.poll_once, self._metrics)
            if not self.ready.is_set():
                self._controller.spawn(self._mark_ready_when_idle())
            try:
                # Any trigger (webhook, signal) ends the sleep early; the newest wake wins.
                await asyncio.wait_for(self.woken.wait(), self._settings.poll_interval)
            except TimeoutError:
                pass
            self.woken.clear()

    async def _mark_ready_when_idle(self) -> None:
        await self._controller.queue.join()
        if not self.ready.is_set():
            log.info("first reconcile pass done: %d folder(s) wanted", len(self._pointers))
            self.ready.set()

    async def poll_once(self) -> None:
        """One listing of the registry for every target; new pointers are checked or queued."""
        started = time.monotonic()
        async with self._reading:
            polled, changed = await self._read_all()
        for name in self._targets:
            self._metrics.registry_poll_duration.labels(target=name).observe(
                time.monotonic() - started
            )
        await self._controller.check_many(changed)
        await self._roots.save_resolutions(self._registry.cache)
        await self._after_poll(polled)
        self._pointers.polled()
        self.passes += 1

    async def _read_all(self) -> tuple[set[str], list[Key]]:
        """The registry's answer for every target, taken: (targets polled, keys changed)."""
        polled: set[str] = set()
        changed: list[Key] = []
        try:
            models = await self._registry.list_models()
        except SyncdError as exc:
            for name in self._targets:
                self._status.registry.poll_failed(name, str(exc))
            return polled, changed
        for name, target in self._targets.items():
            try:
                state = await self._registry.wanted(target, models)
            except SyncdError as exc:
                self._status.registry.poll_failed(name, str(exc))
                continue
            self._status.registry.poll_succeeded(name)
            registered = (m.name for m in models)
            self._status.registry.missing_models(name, missing_names(target.models, registered))
            polled.add(name)
            changed += self._take(target, state, models, scope=None)
        return polled, changed

    async def refresh_model(self, name: str) -> None:
        """A webhook named this model: read it alone and act on its pointers at once."""
        try:
            async with self._reading:
                model = await self._registry.get_model(name)
                models = [model] if model is not None else []
                changed: list[Key] = []
                for target in self._targets.values():
                    if matches(name, target.models):
                        state = await self._registry.wanted(target, models)
                        changed += self._take(target, state, models, scope={name})
        except SyncdError as exc:
            log.warning("webhook refresh of %s failed (%s): polling instead", name, exc)
            self.woken.set()
            return
        await self._controller.check_many(changed)
        await self._roots.save_resolutions(self._registry.cache)

    def _take(
        self,
        target: TargetSettings,
        state: DesiredState,
        models: list[RegisteredModel],
        scope: set[str] | None,
    ) -> list[Key]:
        """A target's desired state taken (for the models in `scope`, or all of them); the
        keys whose pointer is new or moved, which need a look. Keys that did not change cost
        nothing: the sweep, the watcher and the remote check look after them."""
        errors = {model: str(error) for model, error in state.errors.items()}
        unreachable = {
            model
            for model, error in state.errors.items()
            if isinstance(error, ResolutionError) and error.store_unreachable
        }
        self._status.registry.resolution_errors(target.name, errors, scope, unreachable)
        return self._controller.take(self._pointers.apply(target.name, state, models, scope))

    async def _after_poll(self, polled: set[str]) -> None:
        """Retention, once every target sharing a root was polled; foreign folders counted."""
        for rs in self._roots:
            if rs.lock.held and self._settings.gc and set(rs.targets) <= polled:
                await self._collect_garbage(rs)
            rs.foreign = await asyncio.to_thread(rs.store.foreign_folders)
            quarantined = 0
            if rs.lock.held:
                _, quarantined = await asyncio.to_thread(
                    prune_quarantine, rs.store, self._settings.quarantine_keep
                )
            for name in rs.targets:
                self._metrics.foreign_folders.labels(target=name).set(len(rs.foreign))
                self._metrics.quarantine_bytes.labels(target=name).set(quarantined)

    async def _collect_garbage(self, rs: RootState) -> None:
        removals, rs.kept = await asyncio.to_thread(
            collect_garbage,
            rs.store,
            set(rs.targets),
            self._pointers.of(rs.targets),
            self._pointers.failing(rs.targets),
            grace=self._settings.gc_grace,
            keep_previous=self._settings.keep_previous,
        )
        for removal in removals:
            self._metrics.removed_folders.labels(target=removal.target).inc()
            self._status.event(
                "info", removal.target, f"removed {removal.run_id[:8]} ({removal.owner}): unwanted"
            )

    # ---- the writer lock -----------------------------------------------------------------------

    async def try_lock(self, rs: RootState) -> None:
        if await self._roots.try_lock(rs):
            mine = [key for key in self._pointers if key.target in rs.targets]
            if mine:
                self._controller.spawn(self._controller.check_many(mine))

    async def retry_locks(self) -> None:
        for rs in self._roots:
            if not rs.lock.held:
                await self.try_lock(rs)

    # ---- actual state --------------------------------------------------------------------------

    def on_local_change(self, root: Path, run_id: str) -> None:
        """A watchdog event under a run folder: check it locally, at once.

        Our own publication raises events too; the stat-only check finds those folders intact,
        so they cost no S3 request, while a real deletion or edit is queued straight away.
        """
        rs = self._roots.at(root)
        if rs is not None:
            for name in rs.targets:
                self._controller.check_soon(Key(name, run_id), "event")

    async def handed_over_damage(self) -> None:
        """Runs newly recorded as damaged in a root this process writes (by `syncd verify`
        or another host): checked at once, as a watchdog event would be. A record that stays
        (the repair failed) is not queued again here: the work queue's backoff retries it."""
        for rs in self._roots:
            if not rs.lock.held:
                continue
            runs = set(await asyncio.to_thread(rs.store.damage.runs))
            for run_id in sorted(runs - self._damage_seen.get(rs.store.root, set())):
                log.info("damage of run %s handed over in %s: repairing", run_id, rs.store.root)
                self.on_local_change(rs.store.root, run_id)
            self._damage_seen[rs.store.root] = runs

    async def sweep(self) -> None:
        """Queue every wanted folder whose files no longer match their manifest (stat only)."""
        for key in self._pointers:
            await self._controller.check_now(key, "sweep")

    async def remote_checks(self) -> None:
        """Compare each folder in place with its source listing, one at a time, spread evenly
        over `remote_check_interval`: the only S3 requests of an idle daemon."""
        interval = self._settings.remote_check_interval
        while True:
            keys = sorted(self._controller.in_place)
            if not keys:
                await asyncio.sleep(min(interval, 60.0))
                continue
            for key in keys:
                await asyncio.sleep(interval / len(keys))
                self._controller.enqueue(key)

    async def deep_verify(self) -> None:
        """Re-hash every wanted folder (rate-limited); queue those with altered files."""
        limiter = RateLimiter(self._settings.deep_verify_rate)
        for key in self._pointers:
            if not self._controller.writes(key):
                continue
            store = self._roots.of(key.target).store
            manifest = await asyncio.to_thread(store.read_manifest, key.run_id)
            if manifest is None:
                continue
            folder = store.run_dir(key.run_id)
            problems = await asyncio.to_thread(verify_manifest, folder, manifest, limiter)
            desired = self._pointers.get(key)
            if not problems or desired is None:
                continue
            self._metrics.deep_verify_problems.labels(target=key.target).inc(len(problems))
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
            self._controller.enqueue(key)
