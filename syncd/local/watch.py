"""Filesystem events under the target roots, turned into reconcile wake-ups (watchdog).

Each root is watched on its own (a run folder appearing, vanishing or being swapped), and
each run folder on its own (a file deleted or changed), never recursively. watchdog's
recursive mode keeps a path -> watch map that breaks when a watched folder is swapped with
`renameat2(RENAME_EXCHANGE)` and the old copy deleted (its reader thread dies on a KeyError),
which is exactly how syncd publishes a repair. Per-folder watches cannot get out of step: a
swapped folder's old watch dies with the old copy, and the root-level event re-arms a watch on
the new one. syncd's own `.syncd/` bookkeeping is not watched at all.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.utils import BaseThread

from syncd.core.ids import is_run_id

__all__ = ["RootWatcher"]

log = logging.getLogger(__name__)

# Endpoints reading the models produce these by the thousand; they change nothing.
_IGNORED = {"opened", "closed_no_write"}

Notify = Callable[[Path, str], None]


class _QuietStoppedEmitter(logging.Filter):
    """Drops watchdog's ERROR line for a benign race: an emitter that was just unscheduled
    (a swapped folder's old watch) runs its loop once more and logs that it is inactive."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_QuietStoppedEmitter())


def _paths(event: FileSystemEvent) -> list[Path]:
    raw = [event.src_path, getattr(event, "dest_path", "")]
    return [Path(p if isinstance(p, str) else p.decode()) for p in raw if p]


class _RootHandler(FileSystemEventHandler):
    """Events directly under a root: a run folder created, deleted, moved or swapped."""

    def __init__(self, root: Path, notify: Notify) -> None:
        self._root = root
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED:
            return
        for path in _paths(event):
            if path.parent == self._root and is_run_id(path.name):
                self._notify(self._root, path.name)


class _FolderHandler(FileSystemEventHandler):
    """Events inside one run folder: a file deleted, written, moved."""

    def __init__(self, root: Path, run_id: str, notify: Notify) -> None:
        self._root = root
        self._run_id = run_id
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _IGNORED:
            self._notify(self._root, self._run_id)


class RootWatcher:
    """Watches roots and their run folders; `on_change(root, run_id)` runs on the event loop.

    The watchdog thread only hands the event over with call_soon_threadsafe: all decisions
    stay on the loop. NFS delivers no events for other hosts' changes; the sweep covers those,
    and files in subfolders of a run folder (only the subfolder itself is watched).
    """

    def __init__(
        self,
        roots: list[Path],
        on_change: Callable[[Path, str], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._roots = roots
        self._on_change = on_change
        self._loop = loop
        self._failed = threading.Event()
        self._observer: BaseObserver | None = None
        self._folders: dict[Path, ObservedWatch] = {}
        self._previous_hook = threading.excepthook
        self.restarts = 0

    def _hand_over(self, root: Path, run_id: str) -> None:
        # On watchdog's thread: only schedule the work on the loop.
        self._loop.call_soon_threadsafe(self._changed, root, run_id)

    def _changed(self, root: Path, run_id: str) -> None:
        self.rearm(root, run_id)
        self._on_change(root, run_id)

    def rearm(self, root: Path, run_id: str) -> None:
        """Watch the run folder that is at `root/run_id` now (a swap replaced the old one)."""
        observer = self._observer
        if observer is None:
            return
        folder = root / run_id
        old = self._folders.pop(folder, None)
        if old is not None:
            try:
                observer.unschedule(old)
            except (KeyError, OSError):  # its folder is gone already: nothing to undo
                pass
        if folder.is_dir() and not folder.is_symlink():
            try:
                handler = _FolderHandler(root, run_id, self._hand_over)
                self._folders[folder] = observer.schedule(handler, str(folder), recursive=False)
            except OSError as exc:  # removed meanwhile; the root event for that follows
                log.debug("cannot watch %s: %s", folder, exc)

    def _new_observer(self) -> BaseObserver:
        observer = Observer()
        self._observer = observer
        self._folders = {}
        for root in self._roots:
            observer.schedule(_RootHandler(root, self._hand_over), str(root), recursive=False)
        observer.start()
        for root in self._roots:
            for child in root.iterdir():
                if is_run_id(child.name):
                    self.rearm(root, child.name)
        return observer

    def _excepthook(self, args: threading.ExceptHookArgs) -> None:
        if isinstance(args.thread, BaseThread):
            log.warning("filesystem watcher thread failed: %r", args.exc_value)
            self._failed.set()
        else:
            self._previous_hook(args)

    def start(self) -> None:
        self._previous_hook = threading.excepthook
        threading.excepthook = self._excepthook
        self._new_observer()
        log.info("watching %s", ", ".join(str(root) for root in self._roots))

    def ensure_running(self) -> bool:
        """Replace a failed observer; True when it had to (events may have been missed)."""
        observer = self._observer
        if observer is not None and observer.is_alive() and not self._failed.is_set():
            return False
        self._failed.clear()
        if observer is not None:
            try:
                observer.stop()
                observer.join(timeout=5)
            except Exception:  # it is broken already; a fresh one replaces it
                log.debug("stopping the failed watcher", exc_info=True)
        self._new_observer()
        self.restarts += 1
        log.warning("filesystem watcher restarted (%d so far)", self.restarts)
        return True

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if threading.excepthook == self._excepthook:
            threading.excepthook = self._previous_hook
