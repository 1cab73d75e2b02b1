"""Which `Hook` each `after_sync` entry is: the one place a new kind is registered."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from syncd.errors import HookError
from syncd.reconcile.hooks.command import Command
from syncd.reconcile.hooks.domino_restart import DominoRestart
from syncd.reconcile.hooks.event import Hook, HookEvent, HookResult, Retry
from syncd.reconcile.hooks.retry import HookRetry
from syncd.reconcile.hooks.webhook import Webhook
from syncd.settings import DominoSettings, HookSettings

__all__ = ["Attempted", "hook_for"]

log = logging.getLogger(__name__)


def hook_for(settings: HookSettings, domino: DominoSettings, backoff: float) -> Hook:
    """The hook an `after_sync` entry names, with its retries."""
    retry = HookRetry(settings.attempts, backoff)
    if settings.domino_restart is not None:
        return DominoRestart(settings.domino_restart, domino, retry)
    if settings.webhook is not None:
        return Attempted("webhook", Webhook(settings.webhook).attempt, retry)
    assert settings.command is not None  # settings allow exactly one kind per entry
    command = Command(settings.command, settings.timeout, settings.pass_env)
    return Attempted("command", command.attempt, retry)


class Attempted:
    """A hook that is one call tried again while it fails in a curable way (Retry), and
    reported once it succeeds or cannot (HookError, or the attempts spent)."""

    def __init__(
        self, kind: str, attempt: Callable[[HookEvent], Awaitable[str]], retry: HookRetry
    ) -> None:
        self.kind = kind
        self._attempt = attempt
        self._retry = retry

    def applies_to(self, event: HookEvent) -> bool:
        return True

    async def run(self, event: HookEvent) -> HookResult:
        what = f"{event.target}: {self.kind} hook for {event.model} v{event.version} "
        what += f"(run {event.run_id})"
        try:
            detail = await self._retry.run(what, lambda: self._attempt(event), (Retry,))
        except (Retry, HookError) as exc:
            log.error("%s failed: %s", what, exc)
            return HookResult(self.kind, "error", str(exc), self._retry.tried, time.time())
        log.info("%s: %s", what, detail)
        return HookResult(self.kind, "success", detail, self._retry.tried, time.time())
