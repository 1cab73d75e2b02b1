"""Hashing a span of a file already on disk: resumed ranges, deep verify, repairs."""

from __future__ import annotations

import os
from collections.abc import Callable

from syncd.core.checksum import Hasher

__all__ = ["hash_span"]


def hash_span(
    fd: int,
    hasher: Hasher,
    start: int,
    end: int,
    block: int = 8 << 20,
    consumed: Callable[[int], None] | None = None,
) -> int:
    """Feed bytes [start, end) of `fd` to `hasher`; the end of the span actually reached
    (less than `end` when the file is shorter). `consumed` hears each block's size (a rate
    limiter)."""
    # One buffer, read into: fresh `bytes` per block would leave each worker thread's malloc
    # arena holding freed blocks, tens of MB of RSS for nothing.
    buffer = bytearray(min(block, max(end - start, 1)))
    view = memoryview(buffer)
    position = start
    while position < end:
        count = os.preadv(fd, [view[: min(len(buffer), end - position)]], position)
        if not count:
            break
        hasher.update(view[:count])
        if consumed is not None:
            consumed(count)
        position += count
    return position
