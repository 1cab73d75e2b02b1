"""The daemon: the desired state, the controller and its triggers, put together and run.

`Pointers` keeps what the registry wants; `Triggers` (the poll, webhooks, the watcher, the
sweep, remote checks, deep verify, the lock retry) only update it, enqueue keys or run
checks; the `Controller`'s workers take keys off the queue and call the syncer. The status
board is a projection of what they do, read by the page and the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from syncd.core.desired import Registry
from syncd.errors import cut
from syncd.local.store import LocalStore
from syncd.local.watch import RootWatcher
from syncd.metrics import FolderCollector, Metrics
from syncd.reconcile.controller import Controller
from syncd.reconcile.hooks import HookRunner
from syncd.reconcile.pointers import Pointers
from syncd.reconcile.queue import Key, WorkQueue
from syncd.reconcile.roots import Roots
from syncd.reconcile.status import Event, FolderStatus, Readiness, StatusBoard
from syncd.reconcile.syncer import Syncer
from syncd.reconcile.triggers import Triggers, every
from syncd.settings import Settings, TargetSettings

__all__ = ["Daemon", "Event", "FolderStatus", "Key", "WorkQueue"]

log = logging.getLogger(__name__)

_REJECTED_LOG_EVERY = 60.0  # seconds between two "webhook refused" lines


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
        self.targets: dict[str, TargetSettings] = {t.name: t for t in settings.targets}
        self.status = StatusBoard(metrics, list(self.targets))
        self.roots = Roots(settings.targets, metrics, self.status, settings.lock_retry_interval)
        self._registry = registry
        pointers = Pointers(settings.poll_interval)
        self._controller = Controller(
            self.targets,
            pointers,
            self.roots,
            syncer,
            self.status,
            metrics,
            HookRunner(settings.domino),
        )
        self._triggers = Triggers(
            settings, registry, pointers, self._controller, self.roots, self.status, metrics
        )
        self.ready = self._triggers.ready
        self._rejected_since_line = 0
        self._rejected_line_at: float | None = None
        self.started_at = time.time()
        metrics.registry.register(FolderCollector(lambda: list(self.status.folders.values())))
        for name, target in self.targets.items():
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

    @property
    def passes(self) -> int:
        return self._triggers.passes

    def readiness(self) -> Readiness:
        return self.status.readiness(self.ready.is_set())

    async def idle(self) -> None:
        """Until nothing is queued, syncing, or checking or firing hooks in the background."""
        await self._controller.idle()

    def serving_folders_in_place(self) -> tuple[bool, str]:
        """Whether every folder a serving pointer wants is on disk with its manifest, by
        whichever process wrote it (a standby replica answers too): what a model server
        started after syncd needs (`/readyz?in_place`, the sidecar's startup probe)."""
        wanted = [f for f in self.status.folders.values() if f.role == "serving"]
        if not self.ready.is_set() or not wanted:
            return False, "no folder wanted yet" if self.ready.is_set() else "first pass running"
        missing = [
            f"{f.model} v{f.version}"
            for f in wanted
            if not _on_disk(self.roots.of(f.target).store, f.run_id)
        ]
        if missing:
            return False, f"not in place yet: {', '.join(sorted(missing))}"
        return True, f"{len(wanted)} folder(s) in place"

    # ---- what the outside asks -----------------------------------------------------------------

    def wake(self) -> None:
        """Ask for a registry poll now (a webhook that names no model)."""
        self._triggers.woken.set()

    def hangup(self) -> None:
        """SIGHUP: an operator asks again: poll now, and retry every failed folder at once,
        terminal ones included."""
        retried = self._controller.queue.retry_now()
        if retried:
            log.info("SIGHUP: retrying %d failed folder(s) now", len(retried))
        self.wake()

    def webhook_received(self, description: str, model: str | None = None) -> None:
        """A verified MLflow webhook delivery: refresh the model it names (or poll now)."""
        log.info("webhook: %s", description)
        self.metrics.webhooks.labels(result="accepted").inc()
        self.status.event("info", "webhook", description)
        if model is None:
            self.wake()
        else:
            self._controller.spawn(self._triggers.refresh_model(model))

    def webhook_rejected(self, reason: str) -> None:
        """A delivery that failed its check: counted, and logged at most once a minute (with
        how many were refused since), so a flood of bad deliveries cannot flood the log."""
        self.metrics.webhooks.labels(result="rejected").inc()
        self._rejected_since_line += 1
        now = time.monotonic()
        if (
            self._rejected_line_at is not None
            and now - self._rejected_line_at < _REJECTED_LOG_EVERY
        ):
            return
        count, self._rejected_since_line, self._rejected_line_at = self._rejected_since_line, 0, now
        more = f" ({count} refused since the last such line)" if count > 1 else ""
        log.warning("webhook refused: %s%s", cut(reason), more)

    async def poll_once(self) -> None:
        await self._triggers.poll_once()

    async def sweep(self) -> None:
        await self._triggers.sweep()

    async def deep_verify(self) -> None:
        await self._triggers.deep_verify()

    # ---- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled: every worker and trigger in one task group."""
        for rs in self.roots:
            await asyncio.to_thread(rs.store.prepare)
        await asyncio.to_thread(self.roots.load_resolutions, self._registry.cache)
        for rs in self.roots:
            await self._triggers.try_lock(rs)
        watcher = None
        if self.settings.watch:
            loop = asyncio.get_running_loop()
            watcher = RootWatcher(self.roots.paths, self._triggers.on_local_change, loop)
            watcher.start()
        try:
            async with asyncio.TaskGroup() as group:
                self._start(group, watcher)
        finally:
            if watcher is not None:
                watcher.stop()
            self._controller.cancel_background()
            self.roots.release_all()

    def _start(self, group: asyncio.TaskGroup, watcher: RootWatcher | None) -> None:
        settings, triggers = self.settings, self._triggers
        for index in range(settings.max_parallel_syncs):
            group.create_task(self._controller.worker(), name=f"syncd-worker-{index}")
        group.create_task(triggers.poll_loop(), name="syncd-poll")
        group.create_task(
            every(settings.lock_retry_interval, triggers.retry_locks, self.metrics),
            name="syncd-lock",
        )
        group.create_task(
            every(settings.sweep_interval, triggers.sweep, self.metrics), name="syncd-sweep"
        )
        group.create_task(triggers.remote_checks(), name="syncd-remote-check")
        # A `syncd verify` beside the daemon hands damage over in the root: acted on within a
        # second, not at the next sweep (a listing of a folder that is nearly always empty).
        group.create_task(
            every(1.0, triggers.handed_over_damage, self.metrics), name="syncd-damage"
        )
        if watcher is not None:
            guarded = watcher

            async def guard_watcher() -> None:
                if guarded.ensure_running():
                    await triggers.sweep()  # cover whatever happened while it was down

            group.create_task(every(1.0, guard_watcher, self.metrics), name="syncd-watch-guard")
        if settings.deep_verify_interval:
            group.create_task(
                every(settings.deep_verify_interval, triggers.deep_verify, self.metrics),
                name="syncd-deep-verify",
            )


def _on_disk(store: LocalStore, run_id: str) -> bool:
    """The run folder and its manifest are there (stat only)."""
    return store.run_dir(run_id).is_dir() and store.manifest_path(run_id).is_file()
