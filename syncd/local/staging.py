"""A run folder's build on disk: staging prepared from the published folder, published
with its manifest, or discarded (blocking; the syncer calls these in worker threads)."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from syncd.core.folder_plan import FolderPlan
from syncd.core.ids import is_run_id
from syncd.core.manifest import Manifest, RemoteObject
from syncd.errors import LocalStoreError
from syncd.local.inside import InsideFolder
from syncd.local.resume import ResumeState
from syncd.local.store import LocalStore, manifest_lock

__all__ = [
    "clear_staging",
    "discard_build",
    "local_failure",
    "prepare_staging",
    "publish_build",
    "publish_with_manifest",
    "settle_pending",
]

log = logging.getLogger(__name__)


def local_failure(store: LocalStore, exc: OSError, needed: int) -> LocalStoreError:
    # A full disk, a quota, a read-only or failing volume: one clear line that names the root
    # and the need; the failed build is discarded by the caller, freeing its space.
    where = Path(exc.filename).name if exc.filename else "the dataset"
    return LocalStoreError(
        f"{store.root}: {os.strerror(exc.errno or 0).lower()} while writing {where} "
        f"(this sync needs {needed} bytes there)"
    )


def prepare_staging(
    staging: Path, folder: Path, listing: list[RemoteObject], plan: FolderPlan
) -> set[str]:
    """Staging holds the listing's files only: kept files linked from the published folder,
    files to patch copied from it (the published ones stay untouched until the swap).

    Returns the files that vanished from the published folder since the plan was made (a
    folder deleted mid-repair): the caller fetches those instead."""
    # A build interrupted earlier may hold files the source no longer has: never publish those.
    prune(staging, {obj.path for obj in listing})
    vanished = set()
    inside = InsideFolder(folder)
    for path in [*plan.reuse, *plan.patch]:
        destination = staging / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.unlink(missing_ok=True)
        source = inside.regular_file(path)  # never through a link planted since the plan
        try:
            if source is None:
                raise FileNotFoundError(path)
            if path in plan.reuse:
                os.link(source, destination, follow_symlinks=False)
            else:
                copy_file(source, destination)
        except FileNotFoundError:
            vanished.add(path)
    return vanished


def copy_file(source: Path, destination: Path) -> None:
    """A private copy, never through a symlink; `copy_file_range` lets the filesystem share
    or offload the blocks where it can."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        dst = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            remaining = os.fstat(src).st_size
            while remaining:
                copied = os.copy_file_range(src, dst, remaining)
                if not copied:
                    raise OSError(errno.EIO, "short copy", str(source))
                remaining -= copied
        finally:
            os.close(dst)
    finally:
        os.close(src)


def publish_build(
    store: LocalStore,
    staging: Path,
    manifest: Manifest,
    resume: ResumeState,
    previous: Manifest | None,
) -> None:
    store.flush(staging)
    known = {entry.path for entry in previous.files} if previous is not None else None

    def carry_over(current: Manifest | None) -> Manifest:
        # What others recorded meanwhile (hooks run, wanted by) survives the rebuild.
        if current is None:
            return manifest
        wanted = (
            *current.wanted_by,
            *(w for w in manifest.wanted_by if w not in current.wanted_by),
        )
        return replace(manifest, wanted_by=wanted, hooks=current.hooks)

    publish_with_manifest(
        store, staging, manifest.run_id, carry_over, owned=previous is not None, known=known
    )
    resume.clear()


def publish_with_manifest(
    store: LocalStore,
    staging: Path,
    run_id: str,
    change: Callable[[Manifest | None], Manifest],
    *,
    owned: bool,
    known: set[str] | None = None,
) -> Manifest:
    """Publish `staging` as the run's folder together with its manifest.

    The manifest is written (and fsynced) beside the old one first, so a full disk fails
    before the swap, with the old folder and its manifest as they were; after the swap a
    rename, which needs no space, puts it in place. A published folder is so never without
    its manifest (syncd would take its own folder for a stranger's). A crash between the two
    leaves `{run_id}.json.next`, which `settle_pending` adopts when the folder matches it."""
    path = store.manifest_path(run_id)
    with manifest_lock(store.root, run_id):
        manifest = change(store.read_manifest(run_id))
        pending = path.with_name(f"{path.name}.next")
        store.write_atomically(pending, manifest.to_json())
        try:
            store.publish(staging, run_id, owned=owned, known=known)
        except BaseException:
            pending.unlink(missing_ok=True)
            raise
        os.replace(pending, path)
    return manifest


def settle_pending(store: LocalStore) -> None:
    """Manifests a crash left half-published (`.json.next`): adopted where the folder is
    exactly what they describe (it was swapped in), else dropped (it was not). Only the
    root's writer calls this."""
    for pending in store.manifests.glob("*.json.next"):
        run_id = pending.name.removesuffix(".json.next")
        if not is_run_id(run_id) or pending.is_symlink():
            continue
        try:
            manifest: Manifest | None = Manifest.from_json(pending.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            manifest = None
        if manifest is not None and manifest.run_id == run_id and not store.damaged(manifest):
            os.replace(pending, store.manifest_path(run_id))
            log.info("adopted the manifest of run %s written before a crash", run_id)
        else:
            pending.unlink(missing_ok=True)


def prune(staging: Path, wanted: set[str]) -> None:
    """Delete files under `staging` that are not in `wanted` (relative paths), and the
    folders that leaves empty (children come before their parents in reverse order)."""
    for path in sorted(staging.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.relative_to(staging).as_posix() not in wanted:
            path.unlink()


def discard_build(store: LocalStore, staging: Path, resume: ResumeState) -> None:
    store.discard(staging)
    resume.clear()


def clear_staging(store: LocalStore, keep_resumable_for: float = 86400.0) -> None:
    """Remove what a dead writer left half-built; only the lock holder may do this.

    Folders of an interrupted sync (`{run_id}.resume`, with their part maps) younger than
    `keep_resumable_for` seconds stay, so the next sync fetches only what they lack.
    """
    now = time.time()
    kept = set()
    store.prepare()
    for leftover in store.staging.iterdir():
        if leftover.is_symlink():
            store.set_aside(leftover)
            continue
        name = leftover.name.removesuffix(".resume")
        fresh = now - leftover.lstat().st_mtime < keep_resumable_for
        if leftover.name.endswith(".resume") and is_run_id(name) and fresh:
            kept.add(name)
            continue
        store.discard(leftover)
    for leftover in store.trash.iterdir():
        store.discard(leftover)
    for part_map in store.parts.iterdir():
        if part_map.is_symlink():
            store.set_aside(part_map)
        elif part_map.name not in kept:
            store.discard(part_map)
