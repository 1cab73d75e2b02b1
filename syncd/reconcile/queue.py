"""The controller's work queue: keys queued at most once, failed keys requeued with backoff."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Key", "WorkQueue", "requeue_delay"]


@dataclass(frozen=True, order=True)
class Key:
    """One unit of work: a run folder under one target's root."""

    target: str
    run_id: str


def requeue_delay(failures: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds before a key that failed `failures` times in a row is tried again.

    Exponential with jitter in [half, full], so a broken model is retried soon after a
    transient fault but never hammers S3 or the registry (client-go's rate-limited queue).
    """
    full = min(cap, base * 2 ** max(failures - 1, 0))
    return random.uniform(full / 2, full)


class Timer(Protocol):
    def cancel(self) -> None: ...


# call `callback` after `delay` seconds (the event loop's call_later; a fake clock in tests)
Later = Callable[[float, Callable[[], None]], Timer]


class WorkQueue:
    """A FIFO of keys where a key is queued at most once.

    A key added while it is being worked on is marked dirty and queued again when that work
    ends, so a trigger that arrives mid-sync is never lost (client-go's workqueue semantics).
    A key waiting out its backoff, or parked as terminal, is not queued by a trigger: only
    its timer, `forget` (the desired state changed) or `retry_now` (an operator asked)
    bring it back, so a poll or sweep every few seconds never defeats the backoff.
    """

    def __init__(self, later: Later | None = None) -> None:
        self._later = later
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._delayed: dict[Key, Timer] = {}
        self._terminal: set[Key] = set()

    def add(self, key: Key) -> None:
        """Queue a key, unless it is waiting out a backoff or parked as terminal."""
        if key in self._delayed or key in self._terminal:
            return
        self._enqueue(key)

    def _enqueue(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_rate_limited(self, key: Key) -> float:
        """Queue a key that just failed after its backoff delay; returns the delay."""
        self._failures[key] = self._failures.get(key, 0) + 1
        delay = requeue_delay(self._failures[key])
        if key not in self._delayed:
            later = self._later or asyncio.get_running_loop().call_later
            self._delayed[key] = later(delay, lambda: self._add_delayed(key))
        return delay

    def _add_delayed(self, key: Key) -> None:
        self._delayed.pop(key, None)
        self.add(key)

    def park(self, key: Key) -> None:
        """A terminal failure: not queued again until `forget` or `retry_now`."""
        self._terminal.add(key)
        timer = self._delayed.pop(key, None)
        if timer is not None:
            timer.cancel()

    def is_parked(self, key: Key) -> bool:
        return key in self._terminal

    def is_failing(self, key: Key) -> bool:
        """Its last attempt failed (it waits out a backoff, or is parked as terminal)."""
        return key in self._failures or key in self._terminal

    def forget(self, key: Key) -> None:
        """The key succeeded, or its desired state changed, or it is no longer wanted: its
        next failure starts a new backoff, and a terminal mark is lifted."""
        self._failures.pop(key, None)
        self._terminal.discard(key)
        timer = self._delayed.pop(key, None)
        if timer is not None:
            timer.cancel()

    def retry_now(self) -> list[Key]:
        """An operator asked (SIGHUP): every key in backoff or parked is queued at once."""
        keys = sorted({*self._delayed, *self._terminal})
        for key in keys:
            self.forget(key)
            self._enqueue(key)
        return keys

    def is_active(self, key: Key) -> bool:
        return key in self._active

    async def get(self) -> Key:
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)  # a trigger mid-sync: unless that sync failed and now waits
        self._queue.task_done()

    async def join(self) -> None:
        await self._queue.join()

    def __len__(self) -> int:
        return len(self._queued) + len(self._active)
