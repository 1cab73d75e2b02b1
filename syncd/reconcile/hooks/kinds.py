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
from syncd.settings import (
    CommandEntry,
    DominoRestartEntry,
    DominoSettings,
    HookSettings,
    WebhookEntry,
)

__all__ = ["Attempted", "hook_for"]

log = logging.getLogger(__name__)


def hook_for(settings: HookSettings, domino: DominoSettings, backoff: float) -> Hook:
    """The hook an `after_sync` entry names, with its retries."""
    if isinstance(settings, DominoRestartEntry):
        return DominoRestart(settings.domino_restart, domino, HookRetry(settings.attempts, backoff))
    if isinstance(settings, WebhookEntry):
        retry = HookRetry(settings.attempts, backoff)
        return Attempted("webhook", Webhook(settings.webhook).attempt, retry)
    if isinstance(settings, CommandEntry):
        command = Command(settings.command, settings.timeout, settings.pass_env)
        return Attempted("command", command.attempt, HookRetry(settings.attempts, backoff))
    raise AssertionError(f"no hook for {settings!r}")  # settings refuse entries of no kind


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
