"""The dataset roots a daemon writes: each one's store, its writer lock, and what it keeps for
the next start (resolved versions)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from syncd.core.resolved import ResolutionCache
from syncd.local.lock import RootLock, take_root
from syncd.local.store import LocalStore
from syncd.metrics import Metrics
from syncd.reconcile.retention import Kept
from syncd.reconcile.status import StatusBoard
from syncd.settings import TargetSettings

__all__ = ["RootState", "Roots"]

log = logging.getLogger(__name__)

_RESOLVED_FILE = "resolved.json"


@dataclass
class RootState:
    """A dataset root: its store, its writer lock, the targets that share it."""

    store: LocalStore
    lock: RootLock
    targets: list[str]
    waiting: bool = False
    foreign: list[str] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)  # unwanted, kept for a rollback


class Roots:
    """Every root the targets name (targets may share one), and which of them this process
    writes: a root is written only while its lock is held."""

    def __init__(
        self,
        targets: list[TargetSettings],
        metrics: Metrics,
        status: StatusBoard,
        lock_retry_interval: float,
    ) -> None:
        self._metrics = metrics
        self._status = status
        self._retry_interval = lock_retry_interval
        self._by_path: dict[Path, RootState] = {}
        for target in targets:
            path = Path(os.path.abspath(target.root))
            if path not in self._by_path:
                self._by_path[path] = RootState(LocalStore(path), RootLock(path), [])
            self._by_path[path].targets.append(target.name)
        self._of_target = {name: rs for rs in self._by_path.values() for name in rs.targets}

    def __iter__(self) -> Iterator[RootState]:
        return iter(self._by_path.values())

    @property
    def paths(self) -> list[Path]:
        return list(self._by_path)

    def at(self, path: Path) -> RootState | None:
        return self._by_path.get(path)

    def of(self, target: str) -> RootState:
        return self._of_target[target]

    def writes(self, target: str) -> bool:
        return self.of(target).lock.held

    async def try_lock(self, rs: RootState) -> bool:
        """Take the root's writer lock if free; True when this call took it."""
        if await asyncio.to_thread(take_root, rs.store, rs.lock, "syncd run"):
            if rs.waiting:
                log.warning("took over the writer lock of %s", rs.store.root)
                for name in rs.targets:
                    self._status.event(
                        "warning", name, f"took over as the writer of {rs.store.root}"
                    )
            rs.waiting = False
            for name in rs.targets:
                self._metrics.lock_held.labels(target=name).set(1)
            return True
        if not rs.waiting:
            rs.waiting = True
            log.warning(
                "%s is written by %s: standing by (checking every %.0fs)",
                rs.store.root,
                rs.lock.holder(),
                self._retry_interval,
            )
            for name in rs.targets:
                self._metrics.lock_waits.labels(target=name).inc()
                self._status.event(
                    "warning", name, f"standing by: {rs.lock.holder()} writes the root"
                )
        for name in rs.targets:
            self._metrics.lock_held.labels(target=name).set(0)
        return False

    def release_all(self) -> None:
        for rs in self:
            rs.lock.release()

    def load_resolutions(self, cache: ResolutionCache) -> None:
        """Resolutions saved by earlier runs, from every root (blocking: run in a thread)."""
        for rs in self:
            text = rs.store.read_state(_RESOLVED_FILE)
            if text is not None:
                loaded = cache.merge_json(text)
                log.info("%s: %d resolved version(s) remembered", rs.store.root, loaded)

    async def save_resolutions(self, cache: ResolutionCache) -> None:
        """New resolutions, into every root this process writes."""
        if not cache.dirty:
            return
        text = cache.to_json()
        for rs in self:
            if rs.lock.held:
                try:
                    await asyncio.to_thread(rs.store.write_state, _RESOLVED_FILE, text)
                except OSError as exc:  # only costs resolution calls after a restart
                    log.warning("cannot save %s under %s: %s", _RESOLVED_FILE, rs.store.meta, exc)
                    return
        cache.dirty = False
