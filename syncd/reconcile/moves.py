"""Hooks once per move: the newest move of each (target, model) is recorded in the root's
manifests, and a version put in place for serving fires its hooks only when it is not that
move already (a rollback to a kept folder is a new move; a heal or a restart is not)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from syncd.core.desired import DesiredModel
from syncd.core.manifest import HookRecord, HookRun, Manifest, last_move
from syncd.local.store import LocalStore
from syncd.reconcile.hooks import HookEvent, HookResult, HookRunner
from syncd.settings import HookSettings

__all__ = ["fire_once"]


async def fire_once(
    runner: HookRunner,
    store: LocalStore,
    target: str,
    hooks: list[HookSettings],
    desired: DesiredModel,
    seconds: float,
    *,
    adopt: bool = False,
) -> list[HookResult] | None:
    """Run the hooks for a move that put this version in place for serving; None when the
    newest move recorded for (target, model) in the root is already this one.

    `adopt` (a folder found in place at start-up): a move made while syncd was down fires,
    but where nothing was ever recorded the folder is adopted silently, never restarted.
    The move is recorded in the run's manifest before the hooks run (unfinished) and again
    after (finished): a later move is always told apart, and a stop mid-hook runs the
    hooks of that move again at the next start (at least once, never lost).
    """
    if not hooks:
        return None
    manifests = await asyncio.to_thread(store.manifests_on_disk)
    mine = next((m for m in manifests if m.run_id == desired.run_id), None)
    if mine is None:
        return None
    newest = last_move(manifests, target, desired.model)
    if newest is not None and (newest[0], newest[1].version) == (
        desired.run_id,
        desired.ref.version,
    ):
        if newest[1].finished:
            return None
        # Recorded, never finished: syncd stopped mid-hook. Run them again (same record): an
        # endpoint restarted twice beats one never restarted onto the version it must serve.
        record = newest[1]
    else:
        record = HookRecord(
            target, desired.model, desired.ref.version, desired.ref.selector, time.time()
        )
        if adopt and newest is None:
            await asyncio.to_thread(_record, store, desired.run_id, replace(record, adopted=True))
            return None
    event = _event(store, mine, target, desired, seconds)
    await asyncio.to_thread(_record, store, desired.run_id, replace(record, finished=False))
    results = await runner.run(hooks, event)
    runs = tuple(HookRun(r.kind, r.result, r.detail, r.attempts) for r in results)
    finished = replace(record, results=runs, finished=True)
    await asyncio.to_thread(_record, store, desired.run_id, finished)
    return results


def _event(
    store: LocalStore, mine: Manifest, target: str, desired: DesiredModel, seconds: float
) -> HookEvent:
    checks: dict[str, int] = {}
    for file in mine.files:
        checks[file.verified_by] = checks.get(file.verified_by, 0) + 1
    return HookEvent(
        target=target,
        model=desired.model,
        version=desired.ref.version,
        pointer=desired.ref.selector,
        run_id=desired.run_id,
        folder=str(store.run_dir(desired.run_id)),
        bytes=mine.total_bytes,
        files=len(mine.files),
        seconds=seconds,
        verified_by=checks,
    )


def _record(store: LocalStore, run_id: str, record: HookRecord) -> None:
    store.update_manifest(
        run_id, lambda current: None if current is None else current.with_hook_record(record)
    )
