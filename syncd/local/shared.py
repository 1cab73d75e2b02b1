"""Files shared between run folders: taken into a build from another folder, re-checked as a
heal would; and a repaired shared file put back into every folder that held it (blocking;
the syncer calls these in worker threads).

Sharing is a hard link where the filesystem allows one (the same inode in two folders: no
bytes copied, no space used), else a private copy (`copy_file_range`). A shared inode is
never written through: a range repair patches a private copy and publishes it in the swap,
so the other folders still hold the old (damaged) inode, which `spread_repair` then replaces
in each of them by the repaired file, one rename per file.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from syncd.core.manifest import FileEntry, Manifest
from syncd.core.reuse import OnDisk, Reusable
from syncd.local.inside import InsideFolder
from syncd.local.staging import copy_file
from syncd.local.store import LocalStore
from syncd.local.verify import RateLimiter, damaged_spans

__all__ = ["Inode", "bring_in", "inodes_of", "intact_on_disk", "spread_repair"]

log = logging.getLogger(__name__)

Inode = tuple[int, int]  # (st_dev, st_ino)


def intact_on_disk(store: LocalStore, candidate: OnDisk) -> Path | None:
    """The candidate's file when it is as its manifest recorded it: a regular file inside its
    folder (never through a link), its size and mtime, and every recorded range's CRC32C."""
    entry = candidate.entry
    spans = entry.spans()
    if not spans or spans[-1].end != entry.size:
        return None  # no range checks covering every byte: nothing to re-check it by
    path = InsideFolder(store.run_dir(candidate.run_id)).regular_file(entry.path)
    if path is None:
        return None
    try:
        facts = os.lstat(path)
        if facts.st_size != entry.size or facts.st_mtime_ns != entry.mtime_ns:
            return None
        if damaged_spans(path, entry, RateLimiter(None)):
            return None
    except OSError:
        return None
    return path


def bring_in(store: LocalStore, item: Reusable, destination: Path) -> Reusable | None:
    """The item's file in staging at `destination`, linked (or copied where links are
    refused), then checked there: None when the source is no longer intact."""
    source = intact_on_disk(store, item.source)
    if source is None:
        return None
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.unlink(missing_ok=True)
    _link_or_copy(source, destination)
    staged = os.lstat(destination)
    entry = replace(item.entry, mtime_ns=staged.st_mtime_ns)
    if staged.st_ino != os.lstat(source).st_ino and damaged_spans(
        destination, entry, RateLimiter(None)
    ):
        destination.unlink()
        return None
    return replace(item, entry=entry)


def inodes_of(store: LocalStore, run_id: str, paths: list[str]) -> dict[str, Inode]:
    """The inodes of a published folder's files that other folders may share (links > 1)."""
    found: dict[str, Inode] = {}
    inside = InsideFolder(store.run_dir(run_id))
    for path in paths:
        facts = inside.lstat(path)
        if facts is not None and facts.st_nlink > 1:
            found[path] = (facts.st_dev, facts.st_ino)
    return found


def spread_repair(store: LocalStore, manifest: Manifest, damaged: dict[str, Inode]) -> list[str]:
    """Every other folder's file that is the same inode as a damaged file the swap just
    replaced becomes a link to the repaired one, and its manifest learns the new mtime (the
    kept previous folder stays ready for a rollback). Returns the run ids changed."""
    if not damaged:
        return []
    repaired = {entry.path: entry for entry in manifest.files}
    folder = store.run_dir(manifest.run_id)
    changed = []
    for other in store.manifests_on_disk():
        if other.run_id == manifest.run_id:
            continue
        inside = InsideFolder(store.run_dir(other.run_id))
        updates: dict[str, FileEntry] = {}
        for entry in other.files:
            facts = inside.lstat(entry.path)
            if facts is None or (facts.st_dev, facts.st_ino) not in damaged.values():
                continue
            path = next(p for p, inode in damaged.items() if inode == (facts.st_dev, facts.st_ino))
            good = repaired.get(path)
            if good is None or good.size != entry.size:
                continue
            target = inside.regular_file(entry.path)
            if target is None:
                continue
            _replace_with_link(folder / path, target)
            updates[entry.path] = replace(
                entry,
                mtime_ns=os.lstat(target).st_mtime_ns,
                range_crc32c=good.range_crc32c,
                verified_at=good.verified_at,
            )
        if updates:
            store.update_manifest(other.run_id, _with_entries(updates))
            changed.append(other.run_id)
            log.info(
                "repaired %s of run %s too (the same file as run %s's)",
                ", ".join(sorted(updates)),
                other.run_id,
                manifest.run_id,
            )
    return changed


def _replace_with_link(good: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.syncd-repair")
    temporary.unlink(missing_ok=True)
    _link_or_copy(good, temporary)
    os.replace(temporary, target)


def _link_or_copy(source: Path, destination: Path) -> None:
    """A hard link (the same inode, no bytes written), or a private copy on a filesystem that
    refuses one (another device, no links, too many links)."""
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        copy_file(source, destination)


def _with_entries(updates: dict[str, FileEntry]) -> Callable[[Manifest | None], Manifest | None]:
    def change(current: Manifest | None) -> Manifest | None:
        if current is None:
            return None
        files = tuple(updates.get(entry.path, entry) for entry in current.files)
        return replace(current, files=files)

    return change
