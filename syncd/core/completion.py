"""Awaiting work that cannot be stopped (a worker thread) through a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from syncd.errors import primary_error

__all__ = ["all_or_first_error", "to_completion"]

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


async def all_or_first_error(jobs: Iterable[Awaitable[T]]) -> list[T]:
    """Run every job at once and return their results in order. The first failure cancels
    the rest, waits for them, and is raised (the first syncd error among those that failed);
    a cancellation of the caller cancels them all, waits for them, and is raised as itself.

    Not a TaskGroup: one whose children fail while its own task is being cancelled reports
    the children's errors and drops the cancellation, so a stop became a failed sync and a
    worker told to stop carried on (the daemon simulation found a SIGTERM that never ended
    so; Python 3.11's TaskGroup also leaves the task's cancel count raised, so the lost
    cancellation cannot be told from the group's own).
    """
    tasks = [asyncio.ensure_future(job) for job in jobs]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        await _cancel_all(tasks)
        raise
    failures = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception()]
    if failures:
        await _cancel_all(tasks)
        errors = [error for error in failures if error is not None]
        raise primary_error(BaseExceptionGroup("jobs failed", errors)) from errors[0]
    return [task.result() for task in tasks]


async def _cancel_all(tasks: Sequence[asyncio.Future[T]]) -> None:
    """Cancel what still runs and wait until all of it has ended, whatever arrives meanwhile
    (each job waits for its own threads); a cancellation meanwhile is raised after."""
    for task in tasks:
        task.cancel()
    cancelled = False
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            cancelled = True
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: the first failure is what gets reported
    if cancelled:
        raise asyncio.CancelledError
