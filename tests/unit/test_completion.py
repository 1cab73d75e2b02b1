"""Work that cannot be stopped, and task groups, through a cancellation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from syncd.core.completion import all_or_first_error, to_completion
from syncd.errors import RetryableError


async def test_a_cancellation_is_not_lost_when_a_child_fails_at_the_same_moment() -> None:
    """TaskGroup reports a child's error and drops its task's cancellation; a worker told to
    stop would carry on as if a sync had merely failed."""

    async def fails() -> None:
        await asyncio.sleep(0)
        raise RetryableError("a range failed", "other")

    task = asyncio.create_task(all_or_first_error([fails(), asyncio.sleep(10)]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the child has failed, the group is tearing down
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_without_a_cancellation_the_primary_error_is_raised() -> None:
    with pytest.raises(RetryableError, match="first"):
        await all_or_first_error([asyncio.sleep(0), _raise(RetryableError("first", "other"))])


async def test_the_first_failure_cancels_the_rest_and_waits_for_them() -> None:
    ended: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            ended.append("slow")

    with pytest.raises(RetryableError):
        await all_or_first_error([slow(), _raise(RetryableError("boom", "other"))])
    assert ended == ["slow"]  # cancelled and ended before the error was raised
    assert await all_or_first_error([_value(1), _value(2)]) == [1, 2]


async def _value(number: int) -> int:
    await asyncio.sleep(0)
    return number


async def _raise(error: Exception) -> None:
    raise error


async def test_a_cancelled_wait_for_a_thread_waits_then_raises() -> None:
    release, finished = threading.Event(), threading.Event()
    aborted: list[bool] = []

    def work() -> None:
        release.wait(10)
        finished.set()

    task = asyncio.create_task(
        to_completion(asyncio.to_thread(work), on_cancel=lambda: aborted.append(True))
    )
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # still waiting for the thread, which cannot be stopped
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()
    assert aborted == [True]
