"""A target's hooks for one event, in order; each hook's failure is a result, not raised."""

from __future__ import annotations

from syncd.reconcile.hooks.event import HookEvent, HookResult
from syncd.reconcile.hooks.kinds import hook_for
from syncd.settings import DominoSettings, HookSettings

__all__ = ["HookRunner"]


class HookRunner:
    """Runs a target's hooks for one event, each with its own retries."""

    def __init__(self, domino: DominoSettings, backoff: float = 1.0) -> None:
        self._domino = domino
        self._backoff = backoff  # seconds: the first retry waits up to this, then doubling

    async def run(self, hooks: list[HookSettings], event: HookEvent) -> list[HookResult]:
        """Every hook that applies to the event, in order."""
        results = []
        for settings in hooks:
            hook = hook_for(settings, self._domino, self._backoff)
            if hook.applies_to(event):
                results.append(await hook.run(event))
        return results
