"""Where a store's run folders are, and how a build becomes one: the part of a dataset folder
that differs between a daemon's root (a folder per run) and a fetch destination (the
destination itself, `syncd.local.flat`). The bookkeeping under `.syncd/` is the store's."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from syncd.core.ids import is_run_id
from syncd.local.swap import publish

if TYPE_CHECKING:
    from syncd.local.store import LocalStore

__all__ = ["Layout", "RunFolders"]


class Layout(Protocol):
    def run_dir(self, store: LocalStore, run_id: str) -> Path:
        """The published folder of a run (its id already checked by the store)."""
        ...

    def foreign_folders(self, store: LocalStore) -> list[str]: ...

    def remove(self, store: LocalStore, run_id: str) -> None: ...

    def publish(
        self,
        store: LocalStore,
        staging: Path,
        run_id: str,
        *,
        owned: bool,
        known: set[str] | None = None,
    ) -> None: ...


class RunFolders:
    """`{root}/{run_id}`, each published in one rename, removed whole."""

    def run_dir(self, store: LocalStore, run_id: str) -> Path:
        return store.root / run_id

    def foreign_folders(self, store: LocalStore) -> list[str]:
        """Folders under the root syncd did not create (no manifest): reported, never touched."""
        foreign = []
        for child in sorted(store.root.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            if not is_run_id(child.name) or not store.manifest_path(child.name).exists():
                foreign.append(child.name)
        return foreign

    def remove(self, store: LocalStore, run_id: str) -> None:
        """Renamed away first, so it vanishes at once and whole, then deleted; its manifest
        last."""
        folder = store.run_dir(run_id)
        if folder.exists():
            store.real_dir(store.trash)
            aside = store.trash / f"{run_id}.{time.time_ns()}"
            os.rename(folder, aside)
            store.discard(aside)
        store.manifest_path(run_id).unlink(missing_ok=True)

    def publish(
        self,
        store: LocalStore,
        staging: Path,
        run_id: str,
        *,
        owned: bool,
        known: set[str] | None = None,
    ) -> None:
        """One rename (`swap.publish`)."""
        publish(store, staging, run_id, owned=owned, known=known)
