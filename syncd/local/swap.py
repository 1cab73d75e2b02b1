"""Publishing a built folder: made durable, then swapped in with one rename."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.errors import LocalStoreError
from syncd.local.inside import is_real_dir

if TYPE_CHECKING:
    from syncd.local.store import LocalStore

__all__ = ["exchange_paths", "extra_entries", "flush", "publish"]

log = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _libc_function(name: str) -> object | None:
    """A libc function Python does not wrap (glibc has both below), or None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return getattr(libc, name, None)
    except OSError:
        return None


_renameat2 = _libc_function("renameat2")
_syncfs = _libc_function("syncfs")


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE).

    False when the platform or filesystem cannot (then the caller falls back to two renames).
    """
    if _renameat2 is None:
        return False
    result = _renameat2(  # type: ignore[operator]
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first))


def extra_entries(folder: Path, listed: set[str]) -> list[str]:
    """Files and links under `folder` that are not in `listed` (folders that only hold listed
    files are not entries); symlinks are never followed."""
    extras: list[str] = []
    if not is_real_dir(folder):
        return extras  # os.walk would list what a link at the top points to
    for current, folders, files in os.walk(folder, followlinks=False):
        base = Path(current).relative_to(folder)
        if base == Path("."):
            # syncd's own bookkeeping where the destination is the run folder (`syncd fetch`)
            folders[:] = [d for d in folders if d != ".syncd"]
        for name in files + [d for d in folders if (Path(current) / d).is_symlink()]:
            relative = (base / name).as_posix()
            if relative not in listed:
                extras.append(relative)
    return extras


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flush(staging: Path) -> None:
    """Make a built folder's data durable before it is published.

    One syncfs(2) flushes the filesystem the dataset is on, instead of one fsync per file
    (a model of thousands of small files would pay thousands of round trips); where
    syncfs is missing, each file is fsynced.
    """
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs is not None and _syncfs(fd) == 0:  # type: ignore[operator]
            return
    finally:
        os.close(fd)
    for path in staging.rglob("*"):
        if path.is_file() and not path.is_symlink():
            file_fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(file_fd)
            finally:
                os.close(file_fd)


def publish(
    store: LocalStore, staging: Path, run_id: str, *, owned: bool, known: set[str] | None = None
) -> None:
    """Make `staging` the published folder of `run_id` in one rename.

    A previous folder is swapped out atomically where the filesystem allows. What syncd
    created (`owned`) is then removed; a folder it did not create is kept in quarantine.
    """
    target = store.run_dir(run_id)
    _fsync_directory(staging)
    _set_aside_unless_folder(store, target)
    try:
        os.rename(staging, target)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            raise LocalStoreError(f"cannot publish {target}: {exc.strerror}") from exc
        _replace(store, staging, target, owned=owned, known=known)
    _fsync_directory(store.root)


def _set_aside_unless_folder(store: LocalStore, path: Path) -> None:
    """A symlink or a file where a run folder should be is set aside (the link itself, never
    what it points to): renamed over or exchanged, its target would be walked and moved."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        store.real_dir(store.quarantine)
        store.set_aside(path)


def _set_aside_extras(store: LocalStore, old: Path, known: set[str] | None) -> None:
    """What someone added to a folder syncd made is theirs: kept in quarantine, not
    deleted with the old copy."""
    if known is None:
        return
    extras = extra_entries(old, known)
    if not extras:
        return
    store.real_dir(store.quarantine)
    kept = store.quarantine / f"{old.name.split('.')[0]}.extra.{time.time_ns()}"
    for extra in extras:
        destination = kept / extra
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(old / extra, destination)
    log.warning("kept %d file(s) syncd did not put in a run folder at %s", len(extras), kept)


def _replace(
    store: LocalStore, staging: Path, target: Path, *, owned: bool, known: set[str] | None = None
) -> None:
    if exchange_paths(staging, target):
        old = staging  # after the exchange the old content sits where staging was
    else:
        # No atomic exchange here (NFS, macOS): a short window without the folder.
        old = store.staging / f"{target.name}.old.{time.time_ns()}"
        os.rename(target, old)
        os.rename(staging, target)
    if not is_real_dir(old):
        # A link planted between the check and the swap: set aside, never walked or emptied.
        store.set_aside(old)
        return
    if owned:
        _set_aside_extras(store, old, known)
        store.discard(old)
    else:
        store.real_dir(store.quarantine)
        # Unique to the nanosecond: two hand copies set aside within one second must not
        # collide (the simulation found that: the rename failed and the copy stayed in
        # staging, where the next writer would have cleared it).
        stamp = f"{time.strftime('%Y%m%dT%H%M%S')}.{time.time_ns() % 1_000_000_000:09d}"
        kept = store.quarantine / f"{target.name}.{stamp}"
        os.rename(old, kept)
        log.warning("kept a folder syncd did not create at %s", kept)
