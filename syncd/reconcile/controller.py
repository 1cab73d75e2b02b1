"""The controller: workers take keys off the queue and ensure their folders; a handler turns
each result into `forget` (done) or a rate-limited requeue (a terminal error: parked until the
desired state changes or an operator asks again). Hooks fire for pointer moves put in place.

Triggers call in here only to enqueue a key or to check folders; the status board is written
here and never read for a decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import replace

from syncd.core.desired import DesiredModel
from syncd.core.manifest import WantedBy
from syncd.errors import SyncdError, is_terminal, is_unreachable
from syncd.local.store import LocalStore
from syncd.metrics import Metrics
from syncd.reconcile.hooks import HookRunner
from syncd.reconcile.moves import fire_once
from syncd.reconcile.pointers import Change, Pointers
from syncd.reconcile.queue import Key, WorkQueue
from syncd.reconcile.roots import Roots
from syncd.reconcile.status import StatusBoard
from syncd.reconcile.syncer import Syncer, SyncOutcome, SyncProgress
from syncd.settings import TargetSettings

__all__ = ["Controller", "in_place"]

log = logging.getLogger(__name__)


def in_place(store: LocalStore, key: Key, wanted: DesiredModel) -> bool:
    """Stat-only: the folder is complete, untouched and recorded as wanted this way."""
    manifest = store.read_manifest(key.run_id)
    if manifest is None or store.damaged(manifest) or store.damage.has(key.run_id):
        return False
    pointer = WantedBy(key.target, wanted.model, wanted.ref.selector, wanted.ref.version)
    return pointer in manifest.wanted_by


class Controller:
    """Workers over the key queue, and what follows a folder being put in place."""

    def __init__(
        self,
        targets: dict[str, TargetSettings],
        pointers: Pointers,
        roots: Roots,
        syncer: Syncer,
        status: StatusBoard,
        metrics: Metrics,
        hooks: HookRunner,
        queue: WorkQueue | None = None,
    ) -> None:
        self.queue = queue if queue is not None else WorkQueue()  # an empty queue is falsy
        self._targets = targets
        self._pointers = pointers
        self._roots = roots
        self._syncer = syncer
        self._status = status
        self._metrics = metrics
        self._hooks = hooks
        self.in_place: set[Key] = set()  # found or made in place, and not failed since
        self._checking: set[Key] = set()  # local checks under way (events coalesce)
        self._hooks_looked_at: set[Key] = set()
        self._hook_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()

    def writes(self, key: Key) -> bool:
        return self._roots.writes(key.target)

    def enqueue(self, key: Key) -> None:
        """Queue a wanted key of a root this process writes (its backoff respected)."""
        if key in self._pointers and self.writes(key):
            self.queue.add(key)

    def spawn(self, job: Awaitable[None]) -> None:
        async def run() -> None:
            await job

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def idle(self) -> None:
        """Until nothing is queued, being worked on, or checking or firing hooks in the
        background (what tests and the simulation wait for)."""
        while True:
            await self.queue.join()
            if not self._background:
                if not len(self.queue):
                    return
                continue
            await asyncio.wait(list(self._background))

    def cancel_background(self) -> None:
        for task in list(self._background):
            task.cancel()

    # ---- the desired state changed -------------------------------------------------------------

    def take(self, change: Change) -> list[Key]:
        """Act on a change of the pointer map; returns the keys that need a look."""
        for key in change.removed:
            self._status.unwanted(key)
            self.queue.forget(key)
            self.in_place.discard(key)
        for key in change.changed:
            desired = self._pointers.get(key)
            assert desired is not None
            self._status.wanted(key, desired, self._pointers.moved_at(key))
            self.queue.forget(key)  # a new desired state: a fresh start, backoff and all
            self.in_place.discard(key)
        for key in change.unchanged:
            if self.queue.is_failing(key) and self.writes(key):
                self.queue.add(key)  # a poll is a good moment to try a failing key again
        for key in [*change.changed, *change.unchanged]:
            if not self.writes(key):
                self._status.standby(key)
        self._status.desired_changed(self._pointers.items())
        return change.changed

    # ---- local checks --------------------------------------------------------------------------

    async def check_many(self, keys: list[Key]) -> None:
        """Stat-only checks of many folders in one worker thread; queue what is not in place."""
        wanted = {
            key: desired
            for key in keys
            if (desired := self._pointers.get(key)) is not None and self.writes(key)
        }
        if not wanted:
            return

        def inspect() -> dict[Key, bool]:
            return {
                key: in_place(self._roots.of(key.target).store, key, d) for key, d in wanted.items()
            }

        for key, found in (await asyncio.to_thread(inspect)).items():
            self._act_on(key, found, "check")

    def check_soon(self, key: Key, why: str) -> None:
        """A local check of one folder in the background; requests for it coalesce."""
        if key in self._pointers and key not in self._checking:
            self._checking.add(key)
            self.spawn(self._check_locally(key, why))

    async def check_now(self, key: Key, why: str) -> None:
        if key not in self._checking:
            self._checking.add(key)
            await self._check_locally(key, why)

    async def _check_locally(self, key: Key, why: str) -> None:
        try:
            desired = self._pointers.get(key)
            if desired is None or not self.writes(key) or self.queue.is_active(key):
                return
            store = self._roots.of(key.target).store
            found = await asyncio.to_thread(in_place, store, key, desired)
            self._act_on(key, found, why)
        finally:
            self._checking.discard(key)

    def _act_on(self, key: Key, found: bool, why: str) -> None:
        desired = self._pointers.get(key)
        if desired is None:
            return
        if self.queue.is_active(key):
            # A sync of this key is under way, maybe for what was wanted before: it is done
            # again once that one ends (the queue marks it dirty), against what is wanted now.
            self.queue.add(key)
            return
        if not found:
            log.info("%s: %s: run %s needs a sync", key.target, why, key.run_id)
            self.queue.add(key)
            return
        if self.queue.is_failing(key):
            return  # in place on disk, but its last sync failed: the page keeps saying so
        self.in_place.add(key)
        self._status.in_place(key, desired, None)
        if self._pointers.arrived(key):  # e.g. promoted to a pre-staged version
            self._after_in_place(key, desired, None)
        elif key not in self._hooks_looked_at:
            # Found in place at start-up: a move made while syncd was down still fires
            # (the manifests say which move came last); nothing else does.
            self._after_in_place(key, desired, None, adopt=True)

    # ---- work ----------------------------------------------------------------------------------

    async def worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self._ensure(key)
            finally:
                self.queue.done(key)

    async def _ensure(self, key: Key) -> None:
        desired = self._pointers.get(key)
        if desired is None or not self.writes(key):
            return  # no longer wanted since it was queued, or another process writes the root
        progress = SyncProgress()
        self._status.syncing(key, progress)
        self.in_place.discard(key)
        store = self._roots.of(key.target).store
        started = time.monotonic()
        try:
            outcome = await self._syncer.ensure(store, key.target, desired, progress)
        except Exception as exc:
            self._metrics.sync_duration.labels(target=key.target).observe(
                time.monotonic() - started
            )
            if self._pointers.get(key) == desired:
                self._failed(key, desired, exc)
            return
        outcome = replace(outcome, seconds=time.monotonic() - started)
        if self._pointers.get(key) != desired:
            # The pointer moved while this synced (away, or here another way): the result
            # answers a question no longer asked. The change queued the key again.
            return
        if outcome.result == "synced":
            self._metrics.sync_duration.labels(target=key.target).observe(outcome.seconds)
        self.queue.forget(key)
        self.in_place.add(key)
        moved = self._pointers.arrived(key)
        self._status.in_place(key, desired, outcome)
        if (outcome.result == "synced" and not outcome.healed) or moved:
            self._after_in_place(key, desired, outcome)
        elif key not in self._hooks_looked_at:
            # First in place since start-up, healed or found so: a move made while syncd was
            # down still fires, whatever the folder needed (the simulation found a rollback
            # made during a restart that never fired because the folder needed a heal).
            self._after_in_place(key, desired, outcome, adopt=True)

    def _failed(self, key: Key, desired: DesiredModel, exc: Exception) -> None:
        if isinstance(exc, SyncdError):
            error = str(exc)
        else:  # a bug must not stop the other folders; log it loudly
            log.exception("%s: unexpected error syncing run %s", key.target, key.run_id)
            error = f"internal error: {type(exc).__name__}: {exc}"
        if is_terminal(exc):
            # No retry can change this: parked until the pointer moves or SIGHUP.
            self.queue.park(key)
            self._status.failed(key, desired, error, None)
        else:
            retry_in = self.queue.add_rate_limited(key)
            self._status.failed(key, desired, error, retry_in, unreachable=is_unreachable(exc))

    # ---- after a folder is in place ------------------------------------------------------------

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
        self.spawn(self._run_hooks(key, desired, outcome, adopt))

    async def _run_hooks(
        self, key: Key, desired: DesiredModel, outcome: SyncOutcome | None, adopt: bool
    ) -> None:
        # One model's moves are decided and fired one at a time, in the order they were put
        # in place: two deciding at once both read the same newest record (the simulation
        # found a superseded move's hooks running last, the endpoint left on the version the
        # alias had left).
        lock = self._hook_locks.setdefault((key.target, desired.model), asyncio.Lock())
        async with lock:
            if self._pointers.get(key) != desired:
                return  # superseded before its hooks ran: the later move decides
            store = self._roots.of(key.target).store
            seconds = outcome.seconds if outcome is not None else 0.0
            hooks = self._targets[key.target].after_sync
            results = await fire_once(
                self._hooks, store, key.target, hooks, desired, seconds, adopt=adopt
            )
        if results is not None:
            self._status.hooks_ran(key, desired, results)
