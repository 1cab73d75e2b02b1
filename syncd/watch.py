"""Filesystem events under the target roots, turned into reconcile wake-ups (watchdog)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from syncd.ids import is_run_id

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
    """

    def __init__(
        self,
        roots: list[Path],
        on_change: Callable[[Path, str], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._observer = Observer()

        def hand_over(root: Path, run_id: str) -> None:
            loop.call_soon_threadsafe(on_change, root, run_id)

        for root in roots:
            self._observer.schedule(_Handler(root, hand_over), str(root), recursive=True)
        self._roots = roots

    def start(self) -> None:
        self._observer.start()
        log.info("watching %s", ", ".join(str(root) for root in self._roots))

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
