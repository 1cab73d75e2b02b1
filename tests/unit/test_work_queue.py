"""The work queue: backoff that every trigger respects, terminal keys parked, operators'
retries; no server, no clock but the event loop's."""

from __future__ import annotations

import asyncio

from syncd.reconcile.queue import Key, WorkQueue

KEY, OTHER = Key("t", "a" * 32), Key("t", "b" * 32)


async def test_a_trigger_does_not_cut_a_backoff_short() -> None:
    queue = WorkQueue()
    queue.add(KEY)
    assert await queue.get() == KEY
    delay = queue.add_rate_limited(KEY)  # the sync failed
    queue.done(KEY)
    assert delay > 0
    for _ in range(10):  # polls, sweeps, the remote check: every few seconds
        queue.add(KEY)
    assert len(queue) == 0
    queue.add(OTHER)
    assert len(queue) == 1  # other keys are not held up


async def test_the_backoff_timer_brings_the_key_back() -> None:
    queue = WorkQueue()
    queue.add(KEY)
    await queue.get()
    queue.add_rate_limited(KEY)
    queue.done(KEY)
    assert await asyncio.wait_for(queue.get(), 5) == KEY  # first backoff: 0.5-1 s


async def test_a_parked_key_waits_for_a_new_desired_state_or_an_operator() -> None:
    queue = WorkQueue()
    queue.add(KEY)
    await queue.get()
    queue.park(KEY)
    queue.done(KEY)
    queue.add(KEY)
    assert len(queue) == 0
    assert queue.is_parked(KEY)
    queue.forget(KEY)  # the registry points elsewhere, or the pointer moved
    queue.add(KEY)
    assert len(queue) == 1
    assert await queue.get() == KEY
    queue.park(KEY)
    queue.done(KEY)
    assert queue.retry_now() == [KEY]  # SIGHUP
    assert await queue.get() == KEY
    assert not queue.is_parked(KEY)
    queue.done(KEY)


async def test_a_trigger_mid_sync_that_then_fails_waits_its_backoff() -> None:
    queue = WorkQueue()
    queue.add(KEY)
    await queue.get()
    queue.add(KEY)  # dirty: re-checked once this sync ends...
    queue.add_rate_limited(KEY)  # ...but it failed: the recheck is the backoff's
    queue.done(KEY)
    assert len(queue) == 0
