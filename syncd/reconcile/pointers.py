"""The desired state, kept by itself: which run folder each target's pointers want, and which
of those a serving pointer moved to since start-up (the moves that fire hooks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from syncd.core.desired import DesiredModel, DesiredState, RegisteredModel
from syncd.reconcile.queue import Key

__all__ = ["Change", "Pointers"]


@dataclass
class Change:
    """What one registry answer changed for one target."""

    changed: list[Key] = field(default_factory=list)  # newly wanted, or wanted another way
    removed: list[Key] = field(default_factory=list)  # no longer wanted
    unchanged: list[Key] = field(default_factory=list)  # wanted as before


class Pointers:
    """The pointer map (key -> the model version that wants it) and the moves not yet in
    place. Decisions are taken from this, never from what the status page shows."""

    def __init__(self, poll_interval: float) -> None:
        self._poll_interval = poll_interval
        self._wanted: dict[Key, DesiredModel] = {}
        self._moved: dict[Key, float] = {}  # key -> when its serving pointer moved there
        self._last_poll: float | None = None
        # (target, model) that failed to resolve at its last reading: what it wants is not
        # known, so retention keeps every folder of the model meanwhile.
        self._failing: set[tuple[str, str]] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._wanted

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._wanted))

    def __len__(self) -> int:
        return len(self._wanted)

    def get(self, key: Key) -> DesiredModel | None:
        return self._wanted.get(key)

    def items(self) -> dict[Key, DesiredModel]:
        return dict(self._wanted)

    def of(self, targets: list[str]) -> set[str]:
        """The run ids these targets want."""
        return {key.run_id for key in self._wanted if key.target in targets}

    def failing(self, targets: list[str]) -> set[str]:
        """Models of these targets whose pointer could not be resolved at the last reading."""
        return {model for target, model in self._failing if target in targets}

    def moved_at(self, key: Key) -> float | None:
        return self._moved.get(key)

    def arrived(self, key: Key) -> bool:
        """The folder is in place: True (once) when a pointer move brought it there."""
        return self._moved.pop(key, None) is not None

    def polled(self) -> None:
        self._last_poll = time.time()

    def apply(
        self,
        target: str,
        state: DesiredState,
        models: list[RegisteredModel],
        scope: set[str] | None,
    ) -> Change:
        """Take a target's desired state for the models in `scope` (None: all of them).

        A model that failed to resolve this time keeps what it wanted before.
        """
        change = Change()
        self._failing = {
            (t, m)
            for t, m in self._failing
            if t != target or (scope is not None and m not in scope)
        } | {(target, model) for model in state.errors}
        wanted = {Key(target, d.run_id): d for d in state.models}
        for key in [k for k in self._wanted if k.target == target]:
            model = self._wanted[key].model
            in_scope = scope is None or model in scope
            if in_scope and key not in wanted and model not in state.errors:
                del self._wanted[key]
                self._moved.pop(key, None)
                change.removed.append(key)
        updated = {m.name: m.updated_at for m in models}
        for key, desired in wanted.items():
            before = self._wanted.get(key)
            self._wanted[key] = desired
            if before is not None and _same(before, desired):
                change.unchanged.append(key)
                continue
            self._moved.pop(key, None)
            if self._last_poll is not None and desired.role == "serving":
                # A move while running; the first poll finds what was wanted before start-up.
                self._moved[key] = self._when(updated.get(desired.model))
            change.changed.append(key)
        return change

    def _when(self, registry_time: float | None) -> float:
        """When the pointer moved: the registry's own time when it is plausible, else now."""
        now = time.time()
        floor = (self._last_poll or now) - self._poll_interval - 60
        if registry_time is not None and floor <= registry_time <= now:
            return registry_time
        return now


def _same(before: DesiredModel, after: DesiredModel) -> bool:
    return (before.ref.version, before.ref.selector, before.role) == (
        after.ref.version,
        after.ref.selector,
        after.role,
    )
