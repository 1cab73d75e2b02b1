"""A whole-object hash fed in byte order while the ranges of a download finish in any order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from syncd.core.checksum import Hasher
from syncd.core.completion import to_completion
from syncd.core.plan import Range

__all__ = ["HashBack", "OrderedHasher"]

# Feeds bytes [start, end) of the file on disk to a hasher (blocking).
HashBack = Callable[[Hasher, int, int], None]


class OrderedHasher:
    """MD5 and SHA cannot be split, so this follows the contiguous prefix that is on disk and
    reads it back (`hash_back`) in a worker thread, alongside the download rather than after
    it."""

    def __init__(self, hash_back: HashBack, hasher: Hasher, size: int, executor: Executor) -> None:
        self._hash_back = hash_back
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
                        self._executor, self._hash_back, self._hasher, self._hashed, end
                    )
                )
                self._hashed = end
        return self._hasher
