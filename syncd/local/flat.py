"""A destination folder that holds one run's files directly (`syncd fetch`, KServe).

KServe's storage initializer contract: the model server reads `/mnt/models` itself, an
emptyDir mount point, so the files go straight into it (a mount point cannot be renamed
over). syncd's bookkeeping (manifest, staging, resumable parts, the lock) stays in its
`.syncd/` dot-folder, which model servers ignore, so a re-run downloads nothing when the
folder is complete and only the rest when it is half done. The model server starts only
once the init container has exited 0, so files moved in one by one are never seen partial.
"""

from __future__ import annotations

import os
from pathlib import Path

from syncd.core.manifest import Manifest
from syncd.errors import LocalStoreError
from syncd.local.inside import InsideFolder
from syncd.local.store import LocalStore

__all__ = ["Destination", "drop_others", "flat_store"]


def flat_store(dest: Path) -> LocalStore:
    """A store whose run folder is `dest` itself, its bookkeeping in `dest/.syncd/`."""
    return LocalStore(dest, Destination(dest))


class Destination:
    """The layout of a fetch destination: every run's folder is the destination itself."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest

    def run_dir(self, store: LocalStore, run_id: str) -> Path:
        return self.dest

    def foreign_folders(self, store: LocalStore) -> list[str]:
        return []

    def remove(self, store: LocalStore, run_id: str) -> None:
        """Never: the destination is the run folder, which a run-folder layout would rename
        away whole (`drop_others` removes another version's files one by one instead)."""
        raise LocalStoreError(f"{self.dest}: a fetch destination is never removed whole")

    def publish(
        self,
        store: LocalStore,
        staging: Path,
        run_id: str,
        *,
        owned: bool,
        known: set[str] | None = None,
    ) -> None:
        """Move the built files into the destination, each replacing what was there.

        A file syncd did not put there (no manifest of this destination lists it) is never
        overwritten: the whole move is refused before any file is replaced."""
        built = [
            path.relative_to(staging).as_posix()
            for path in sorted(staging.rglob("*"))
            if path.is_file() and not path.is_symlink()
        ]
        mine = {entry.path for manifest in store.manifests_on_disk() for entry in manifest.files}
        inside = InsideFolder(self.dest)
        theirs = [p for p in built if p not in mine and inside.lstat(p) is not None]
        if theirs:
            more = f" and {len(theirs) - 1} more" if len(theirs) > 1 else ""
            raise LocalStoreError(
                f"{self.dest / theirs[0]}{more} already there and not put there by syncd: "
                "not overwriting; move it away or give an empty DEST"
            )
        for relative in built:
            target = self.dest / relative
            store.real_dir(target.parent)
            if target.is_symlink() or target.is_dir():
                raise LocalStoreError(f"{target} is not a plain file: not replacing it")
            os.replace(staging / relative, target)
        store.discard(staging)


def drop_others(store: LocalStore, keep: Manifest) -> list[str]:
    """Files an earlier fetch of another version left in the destination that `keep` does
    not have: removed, with that version's manifest (they are syncd's own: a manifest lists
    them)."""
    wanted = {entry.path for entry in keep.files}
    removed = []
    for manifest in store.manifests_on_disk():
        if manifest.run_id == keep.run_id:
            continue
        inside = InsideFolder(store.root)
        for entry in manifest.files:
            if entry.path not in wanted:
                # Every folder on the way checked: a link planted at `sub/` must not make
                # `sub/config.json` a file outside DEST.
                path = inside.regular_file(entry.path)
                if path is not None:
                    path.unlink()
                    removed.append(entry.path)
        store.manifest_path(manifest.run_id).unlink(missing_ok=True)
    return removed
