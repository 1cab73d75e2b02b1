"""A whole-object hash fed in byte order while the ranges of a download finish in any order."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from syncd.core.checksum import Hasher
from syncd.core.completion import to_completion
from syncd.core.plan import Range
from syncd.local.files import hash_exactly

__all__ = ["OrderedHasher"]

_BLOCK = 1 << 20


class OrderedHasher:
    """MD5 and SHA cannot be split, so this follows the contiguous prefix that is on disk and
    reads it back from the page cache in a worker thread, alongside the download rather than
    after it."""

    def __init__(self, fd: int, hasher: Hasher, size: int, executor: Executor) -> None:
        self._fd = fd
        self._hasher = hasher
        self._size = size
        self._executor = executor
        self._finished: dict[int, int] = {}
        self._hashed = 0
        self._ready = asyncio.Event()

    def range_done(self, byte_range: Range) -> None:
        self._finished[byte_range.start] = byte_range.end
        self._ready.set()

    async def run(self) -> Hasher:
        """The hasher, fed every byte of the object (returns once the last range is done)."""
        loop = asyncio.get_running_loop()
        while self._hashed < self._size:
            await self._ready.wait()
            self._ready.clear()
            while self._hashed in self._finished:
                end = self._finished.pop(self._hashed)
                # The caller closes the file once this task ends, cancelled or not.
                await to_completion(
                    loop.run_in_executor(
                        self._executor,
                        hash_exactly,
                        self._fd,
                        self._hasher,
                        self._hashed,
                        end,
                        _BLOCK,
                    )
                )
                self._hashed = end
        return self._hasher
