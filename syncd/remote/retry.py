"""One retry policy for every remote read (listings, HEADs, GETs, small reads): which errors a
fresh attempt may cure, how long to wait, and the metric that counts each retry."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from syncd.errors import RetriesExceededError, RetryableError

__all__ = ["TRANSIENT", "RetryObserver", "RetryPolicy", "backoff_delay", "retry_reason"]

T = TypeVar("T")

# What a fresh attempt can cure (connection resets, timeouts, 5xx, short bodies), as every
# store's adapter says it at its boundary: no library's own errors get this far.
TRANSIENT: tuple[type[BaseException], ...] = (RetryableError,)


class RetryObserver(Protocol):
    def request_retried(self, reason: str) -> None: ...


class _Unobserved:
    def request_retried(self, reason: str) -> None:
        pass


def backoff_delay(attempt: int, base: float = 0.2, cap: float = 10.0) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt))."""
    return random.uniform(0, min(cap, base * 2**attempt))


def retry_reason(error: BaseException) -> str:
    """The RETRY_REASONS bucket of a transient error, for metrics."""
    if isinstance(error, RetryableError):
        return error.reason
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionError):
        return "connection"
    name = type(error).__name__
    if "Timeout" in name:
        return "timeout"
    if "Connection" in name or "Disconnected" in name:
        return "connection"
    if "Incomplete" in name or "Payload" in name or "ResponseStreaming" in name:
        return "bad_response"
    return "other"


class RetryPolicy:
    """Up to `attempts` tries of a call, jittered backoff between them, each retry counted."""

    def __init__(
        self,
        attempts: int,
        observer: RetryObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.attempts = attempts
        self._observer = observer or _Unobserved()
        self._sleep = sleep

    async def run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`'s result; the last transient error, wrapped to say what and how often."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except TRANSIENT as exc:
                if attempt == self.attempts:
                    raise RetriesExceededError(what, self.attempts, exc) from exc
                self._observer.request_retried(retry_reason(exc))
                await self._sleep(backoff_delay(attempt))
        raise AssertionError("unreachable")
