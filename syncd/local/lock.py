"""One writer per dataset root: an exclusive lock on a file inside the dataset itself."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from syncd.errors import LocalStoreError
from syncd.local.staging import clear_staging, settle_pending
from syncd.local.store import LocalStore

__all__ = ["RootLock", "take_root"]


class RootLock:
    """`{root}/.syncd/lock`, held with flock for as long as this process writes the root.

    The lock lives on the dataset, not on the host, so replicas on different hosts exclude each
    other: Linux NFS clients turn flock into an NFSv4 lock (EFS included), which the server
    drops when its holder's lease lapses. A killed holder therefore never leaves a stale lock:
    the kernel (locally) or the server (NFS) releases it, and a waiter takes over.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / ".syncd" / "lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self, purpose: str) -> bool:
        """Take the lock if it is free; record who holds it. Never blocks."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_symlink():
                self.path.unlink()  # never lock (and truncate) a file outside the root
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise LocalStoreError(f"cannot open lock {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise LocalStoreError(f"cannot lock {self.path}: {exc.strerror}") from exc
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "purpose": purpose,
            "since": time.time(),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError:
            # Who holds it is for people reading `holder()`; the flock is what excludes, and
            # a full disk must be reported by the sync that needs the space, in its words.
            pass
        self._fd = fd
        return True

    def holder(self) -> str:
        """Who holds the lock, for a person: `syncd run on host pid 123 since ...`."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        if not info:
            return "another process"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.get("since", 0)))
        return (
            f"{info.get('purpose', 'syncd')} on {info.get('host', '?')} "
            f"pid {info.get('pid', '?')} since {since} UTC"
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def take_root(store: LocalStore, lock: RootLock, purpose: str) -> bool:
    """Become the root's writer: take the lock, then clear what a dead writer left half-built
    in staging (only the lock holder may). False while another process writes the root."""
    if not lock.try_acquire(purpose):
        return False
    clear_staging(store)
    settle_pending(store)
    return True
