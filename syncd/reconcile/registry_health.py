"""What the registry last said for each target: poll failures, models that could not be
resolved (and which of them because the artifact store was down), names no model has."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Literal

from syncd.metrics import Metrics

__all__ = ["Level", "RegistryHealth"]

log = logging.getLogger("syncd.reconcile.daemon")

Level = Literal["info", "warning", "error"]  # of an event on the status page
Say = Callable[[Level, str, str], None]  # StatusBoard.event(level, target, message)


class RegistryHealth:
    """Written by the triggers after every registry reading; read by the page and readiness."""

    def __init__(self, metrics: Metrics, targets: list[str], event: Say) -> None:
        self.metrics = metrics
        self.event = event
        self.target_errors: dict[str, str | None] = {name: None for name in targets}
        self.target_error_since: dict[str, float] = {}
        self.model_errors: dict[tuple[str, str], str] = {}
        # The subset of model_errors where the artifact store could not be reached at all.
        self.store_unreachable: set[tuple[str, str]] = set()
        # target -> {name in `models` no registered model has: the closest registered name}
        self.missing: dict[str, dict[str, str | None]] = {name: {} for name in targets}

    def poll_failed(self, target: str, error: str) -> None:
        self.metrics.registry_polls.labels(target=target, result="error").inc()
        if self.target_errors.get(target) != error:
            self.event("error", target, f"registry poll failed: {error}")
            log.warning("%s: registry poll failed: %s", target, error)
        if self.target_errors.get(target) is None:
            self.target_error_since[target] = time.time()
        self.target_errors[target] = error

    def poll_succeeded(self, target: str) -> None:
        self.metrics.registry_polls.labels(target=target, result="success").inc()
        if self.target_errors.get(target) is not None:
            self.event("info", target, "registry reachable again")
        self.target_errors[target] = None
        self.target_error_since.pop(target, None)

    def resolution_errors(
        self,
        target: str,
        errors: dict[str, str],
        scope: set[str] | None,
        unreachable: Collection[str] = (),
    ) -> None:
        """Replace the errors of the models in `scope` (None: all of the target's models);
        `unreachable`: those whose model_context.json could not be read, the store down."""
        previous = dict(self.model_errors)
        stale = [
            k for k in self.model_errors if k[0] == target and (scope is None or k[1] in scope)
        ]
        for key in stale:
            del self.model_errors[key]
            self.store_unreachable.discard(key)
        for model, error in errors.items():
            self.model_errors[(target, model)] = error
            if model in unreachable:
                self.store_unreachable.add((target, model))
            if previous.get((target, model)) != error:
                log.error("%s: %s", target, error)
                self.event("error", target, f"cannot resolve {model}: {error}")
        count = sum(1 for name, _ in self.model_errors if name == target)
        self.metrics.resolution_errors.labels(target=target).set(count)

    def missing_models(self, target: str, missing: dict[str, str | None]) -> None:
        """Names in a target's `models` that match no registered model: said when it changes."""
        if missing != self.missing.get(target, {}):
            if missing:
                names = ", ".join(
                    f"{name!r}" + (f" (did you mean {close!r}?)" if close else "")
                    for name, close in sorted(missing.items())
                )
                log.warning("%s: no registered model is named %s", target, names)
                self.event("warning", target, f"no registered model is named {names}")
            else:
                log.info("%s: every model name in the target is registered", target)
        self.missing[target] = dict(missing)
        self.metrics.missing_models.labels(target=target).set(len(missing))
