"""Filesystem events under the target roots, turned into reconcile wake-ups (watchdog)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.utils import BaseThread

from syncd.core.ids import is_run_id

__all__ = ["RootWatcher"]

log = logging.getLogger(__name__)

# Endpoints reading the models produce these by the thousand; they change nothing.
_IGNORED = {"opened", "closed_no_write"}


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, notify: Callable[[Path, str], None]) -> None:
        self._root = root
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED:
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = Path(raw if isinstance(raw, str) else raw.decode())
            try:
                parts = path.relative_to(self._root).parts
            except ValueError:
                continue
            if parts and is_run_id(parts[0]):
                self._notify(self._root, parts[0])


class RootWatcher:
    """Watches roots recursively; `on_change(root, run_id)` runs on the event loop.

    The watchdog thread only hands the event over with call_soon_threadsafe: all decisions
    stay on the loop. NFS delivers no events for other hosts' changes; the sweep covers those.

    watchdog's inotify bookkeeping can fail when watched folders are swapped and deleted in
    quick succession (exactly what a repair does), and the failure kills its reader thread, so
    events stop with no sign. Exceptions from watchdog's threads are therefore caught here and
    `ensure_running()` replaces the observer; the caller sweeps to cover the gap.
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
        self._previous_hook = threading.excepthook
        self.restarts = 0

    def _new_observer(self) -> BaseObserver:
        def hand_over(root: Path, run_id: str) -> None:
            self._loop.call_soon_threadsafe(self._on_change, root, run_id)

        observer = Observer()
        for root in self._roots:
            observer.schedule(_Handler(root, hand_over), str(root), recursive=True)
        observer.start()
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
        self._observer = self._new_observer()
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
        self._observer = self._new_observer()
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
