"""The quarantine, bounded: what syncd set aside is kept for a person to look at, not for
ever on a disk that may be full (blocking; the lock holder calls it after a poll)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from syncd.local.store import LocalStore

__all__ = ["prune_quarantine"]

log = logging.getLogger(__name__)


def prune_quarantine(store: LocalStore, keep_for: float) -> tuple[int, int]:
    """Remove what has been in `{root}/.syncd/quarantine` longer than `keep_for` seconds;
    returns the (entries, bytes) left."""
    now = time.time()
    left_entries = left_bytes = 0
    try:
        entries = list(os.scandir(store.quarantine))
    except OSError:
        return 0, 0
    for entry in entries:
        try:
            # Set aside by a rename: the entry's ctime is when it arrived (mtime is its own).
            age = now - entry.stat(follow_symlinks=False).st_ctime
        except OSError:
            continue
        path = Path(entry.path)
        if age > keep_for:
            store.discard(path)
            log.info("removed %s from quarantine after %.1f days", path.name, age / 86400)
            continue
        left_entries += 1
        left_bytes += _bytes_below(path)
    return left_entries, left_bytes


def _bytes_below(path: Path) -> int:
    """Bytes of the files at or under `path` (links not followed)."""
    if path.is_symlink() or not path.is_dir():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for current, _, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                total += os.lstat(os.path.join(current, name)).st_size
            except OSError:
                continue
    return total
