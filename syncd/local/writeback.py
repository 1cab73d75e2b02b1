"""Writeback started while the download goes on, so making a folder durable before its
rename costs little after the last byte.

Each finished range is handed to one background thread, which asks the kernel to start
writing it out (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: asynchronous; it returns once the
writes are queued). Done there and not in the pump threads, because the call blocks while the
device queue is full, which would stall the download behind the disk. The final `syncfs` then
finds most pages already clean. Where the call is missing (not Linux), nothing is started
early and the final flush does all the work, as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import queue
import threading
from collections.abc import Callable

__all__ = ["Writeback", "sync_file_range_write"]

log = logging.getLogger(__name__)

_SYNC_FILE_RANGE_WRITE = 2


def _load() -> Callable[[int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    function = getattr(libc, "sync_file_range", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    function.restype = ctypes.c_int

    def call(fd: int, offset: int, length: int) -> int:
        return int(function(fd, offset, length, _SYNC_FILE_RANGE_WRITE))

    return call


sync_file_range_write = _load()


class Writeback:
    """One thread that starts writeback of finished ranges, in the order they finished."""

    def __init__(self, start: Callable[[int, int, int], int] | None = sync_file_range_write):
        self._start = start
        self._queue: queue.SimpleQueue[tuple[int, int, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.requested = 0  # ranges handed over (tests count them)

    def range_done(self, fd: int, offset: int, length: int) -> None:
        """A range is on disk (in the page cache): start writing it out, in the background.

        The descriptor is duplicated: the caller may close its own before the thread runs.
        """
        if self._start is None or length <= 0:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="syncd-writeback", daemon=True
                )
                self._thread.start()
            self.requested += 1
        self._queue.put((os.dup(fd), offset, length))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        assert self._start is not None
        while (item := self._queue.get()) is not None:
            fd, offset, length = item
            try:
                if self._start(fd, offset, length) != 0:
                    # Only a head start: the final flush still makes everything durable.
                    log.debug("sync_file_range failed: %s", os.strerror(ctypes.get_errno()))
            finally:
                os.close(fd)
