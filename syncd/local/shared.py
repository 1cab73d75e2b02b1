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

__all__ = [
    "Inode",
    "bring_in",
    "inodes_of",
    "recorded_on_disk",
    "spread_repair",
]

log = logging.getLogger(__name__)

Inode = tuple[int, int]  # (st_dev, st_ino)


def recorded_on_disk(store: LocalStore, candidate: OnDisk) -> Path | None:
    """The candidate's file when it stands as its manifest recorded it: a regular file inside
    its folder (never through a link), its size and mtime, with range CRCs covering every byte.
    lstat only: the bytes are hashed once, where they are taken in (`bring_in`)."""
    entry = candidate.entry
    spans = entry.spans()
    if not spans or spans[-1].end != entry.size:
        return None  # no range checks covering every byte: nothing to re-check it by
    path = InsideFolder(store.run_dir(candidate.run_id)).regular_file(entry.path)
    if path is None:
        return None
    try:
        facts = os.lstat(path)
    except OSError:
        return None
    if facts.st_size != entry.size or facts.st_mtime_ns != entry.mtime_ns:
        return None
    return path


def bring_in(store: LocalStore, item: Reusable, destination: Path) -> Reusable | None:
    """The item's file in staging at `destination`, linked (or copied where links are
    refused), then every recorded range re-hashed there (a link is the source's own inode):
    None, and nothing left in staging, when the bytes are no longer as recorded."""
    source = recorded_on_disk(store, item.source)
    if source is None:
        return None
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.unlink(missing_ok=True)
    _link_or_copy(source, destination)
    entry = replace(item.entry, mtime_ns=os.lstat(destination).st_mtime_ns)
    if damaged_spans(destination, entry, RateLimiter(None)):
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


def spread_repair(store: LocalStore, manifest: Manifest, damaged: dict[str, Inode]) -> None:
    """Every other folder's file that is the same inode as a damaged file the swap just
    replaced becomes a link to the repaired one, and its manifest learns the new mtime (the
    kept previous folder stays ready for a rollback)."""
    if not damaged:
        return
    repaired = {entry.path: entry for entry in manifest.files}
    paths_of = {inode: path for path, inode in damaged.items()}
    folder = store.run_dir(manifest.run_id)
    for other in store.manifests_on_disk():
        if other.run_id == manifest.run_id:
            continue
        inside = InsideFolder(store.run_dir(other.run_id))
        updates: dict[str, FileEntry] = {}
        for entry in other.files:
            facts = inside.lstat(entry.path)
            path = paths_of.get((facts.st_dev, facts.st_ino)) if facts is not None else None
            good = repaired.get(path) if path is not None else None
            if path is None or good is None or good.size != entry.size:
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
            log.info(
                "repaired %s of run %s too (the same file as run %s's)",
                ", ".join(sorted(updates)),
                other.run_id,
                manifest.run_id,
            )


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
