"""The one retry loop of every hook: attempts, jittered exponential backoff, a line per retry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from syncd.remote.retry import backoff_delay

__all__ = ["HookRetry"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_CAP = 60.0  # seconds: the longest wait between two attempts of a hook


class HookRetry:
    """Up to `attempts` tries; before each retry a full-jitter wait of up to
    `base * 2**(n-1)` seconds (so hooks of many roots do not retry in step)."""

    def __init__(self, attempts: int, base: float) -> None:
        self.attempts = attempts
        self._base = base
        self.tried = 0  # attempts made by the last `run`

    async def run(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        retryable: tuple[type[BaseException], ...],
    ) -> T:
        """`call()`'s result; the last retryable error once the attempts are spent; any
        other error at once."""
        for attempt in range(1, self.attempts + 1):
            self.tried = attempt
            try:
                return await call()
            except retryable as exc:
                if attempt == self.attempts:
                    raise
                delay = backoff_delay(attempt - 1, base=self._base, cap=_CAP)
                log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
