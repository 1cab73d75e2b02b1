"""Awaiting work that cannot be stopped (a worker thread) through a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["to_completion"]

T = TypeVar("T")


async def to_completion(job: Awaitable[T], on_cancel: Callable[[], None] | None = None) -> T:
    """`job`'s result; when cancelled meanwhile, `on_cancel()` once (to cut the work short,
    such as shutting a socket down), then wait for `job` to end and raise the cancellation.

    A thread cannot be stopped: returning while it still writes into a file descriptor the
    caller is about to close (or still changes the root the caller is about to hand on) is
    how files get corrupted. `job`'s own failure after a cancellation is retrieved and
    dropped: the cancellation is the news.
    """
    task = asyncio.ensure_future(job)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            if not cancelled and on_cancel is not None:
                on_cancel()
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()
        raise asyncio.CancelledError
    return task.result()
