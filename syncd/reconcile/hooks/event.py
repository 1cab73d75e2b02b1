"""What a hook is told, what it answers, and what every kind of hook is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Hook", "HookEvent", "HookResult", "Retry"]


@dataclass(frozen=True)
class HookEvent:
    """What the hooks are told: the folder that is now in place for a serving pointer."""

    target: str
    model: str
    version: str
    pointer: str  # "alias production" / "stage Production"
    run_id: str
    folder: str
    bytes: int
    files: int
    seconds: float
    verified_by: dict[str, int]  # check -> number of files


@dataclass(frozen=True)
class HookResult:
    kind: str
    result: Literal["success", "error", "skipped"]
    detail: str
    attempts: int
    at: float
    # "model_id/version_id" of a Domino endpoint syncd stopped and could not start again
    left_stopped: str | None = None
    # "model_id/version_id" restarted (also on success), for clearing a left-stopped alarm
    endpoint: str | None = None


class Retry(Exception):
    """A failure a later attempt may cure (5xx, 429, a refused connection, a non-zero exit)."""


class Hook(Protocol):
    """One entry of a target's `after_sync`: told of a folder in place, says what it did.

    `run` never raises for the hook's own failure (that is a result, reported and counted);
    it retries what a later attempt may cure, through `HookRetry`."""

    kind: str

    def applies_to(self, event: HookEvent) -> bool: ...

    async def run(self, event: HookEvent) -> HookResult: ...
