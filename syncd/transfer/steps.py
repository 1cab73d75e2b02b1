"""The engine's file steps that hold no state of its own: opening a file's writer through a
cancellation, re-hashing a range already on disk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from syncd.core.completion import to_completion
from syncd.core.plan import CheckPlan, Range
from syncd.core.verification import RangeHashers
from syncd.local.direct import RangeWriter
from syncd.local.files import hash_exactly

__all__ = ["open_writer", "rehash"]


async def open_writer(direct: bool, opener: Callable[..., int], *args: object) -> RangeWriter:
    """The file `opener` opens (and preallocates) in a worker thread, in the writer its
    ranges share (direct where the settings and the filesystem allow: syncd.local.direct).
    Cancelled meanwhile, it waits for the thread (which cannot be stopped) and closes what it
    opened: never a leaked descriptor, never a file still being made after the download gave
    up."""
    future = asyncio.ensure_future(asyncio.to_thread(RangeWriter.open, direct, opener, *args))
    try:
        return await to_completion(future)
    except asyncio.CancelledError:
        if future.done() and not future.cancelled() and future.exception() is None:
            future.result().close()
        raise


async def rehash(io: Executor, fd: int, byte_range: Range, check: CheckPlan) -> RangeHashers:
    """The hashers of a range already on disk (a resumed build), fed from the file."""
    hashers = RangeHashers(check, byte_range)
    await to_completion(
        asyncio.get_running_loop().run_in_executor(
            io, hash_exactly, fd, hashers, byte_range.start, byte_range.end, 4 << 20
        )
    )
    return hashers
