"""Hooks once per move, at least once: a stop mid-hook runs that move's hooks again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from syncd.core.desired import DesiredModel, ModelVersionRef
from syncd.core.manifest import FileEntry, Manifest
from syncd.local.store import LocalStore
from syncd.reconcile.hooks import HookEvent, HookResult, HookRunner
from syncd.reconcile.moves import fire_once
from syncd.settings import CommandEntry, DominoSettings, HookSettings

RUN = "c" * 32
HOOKS: list[HookSettings] = [CommandEntry(command=["true"])]


class Counting(HookRunner):
    def __init__(self, stop_once: bool = False) -> None:
        super().__init__(DominoSettings())
        self.events: list[HookEvent] = []
        self._stop_once = stop_once

    async def run(self, hooks: list[HookSettings], event: HookEvent) -> list[HookResult]:
        self.events.append(event)
        if self._stop_once:
            self._stop_once = False
            raise asyncio.CancelledError  # SIGTERM lands while the endpoint restarts
        return [HookResult("command", "success", "ran", 1, time.time())]


def store_with_run(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "root")
    store.prepare()
    store.run_dir(RUN).mkdir()
    entry = FileEntry(path="w.bin", size=1, etag=None, verified_by="size", checksum=None)
    manifest = Manifest(run_id=RUN, source_uri="s3://b/r", files=(entry,))
    store.update_manifest(RUN, lambda _: manifest)
    return store


def wanted() -> DesiredModel:
    return DesiredModel(
        ModelVersionRef("m", "3", "alias production"), RUN, "model_context", "s3://b/r"
    )


async def test_a_move_fires_once(tmp_path: Path) -> None:
    store, runner = store_with_run(tmp_path), Counting()
    assert await fire_once(runner, store, "prod", HOOKS, wanted(), 1.0) is not None
    assert await fire_once(runner, store, "prod", HOOKS, wanted(), 1.0) is None
    assert await fire_once(runner, store, "prod", HOOKS, wanted(), 1.0, adopt=True) is None
    assert len(runner.events) == 1


async def test_a_stop_mid_hook_runs_the_hooks_again_at_the_next_start(tmp_path: Path) -> None:
    store, runner = store_with_run(tmp_path), Counting(stop_once=True)
    with pytest.raises(asyncio.CancelledError):
        await fire_once(runner, store, "prod", HOOKS, wanted(), 1.0)
    (record,) = store.read_manifest(RUN).hooks  # type: ignore[union-attr]
    assert not record.finished
    # the next start finds the folder in place: the interrupted move runs again, then is done
    assert await fire_once(runner, store, "prod", HOOKS, wanted(), 1.0, adopt=True) is not None
    assert await fire_once(runner, store, "prod", HOOKS, wanted(), 1.0, adopt=True) is None
    assert len(runner.events) == 2
    (record,) = store.read_manifest(RUN).hooks  # type: ignore[union-attr]
    assert record.finished
    assert [r.result for r in record.results] == ["success"]
