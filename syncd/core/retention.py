"""Which unwanted run folders go, and which stay for a rollback (pure)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Unwanted", "select_removals"]


@dataclass(frozen=True)
class Unwanted:
    """A folder syncd made that no target wants now, and since when."""

    run_id: str
    models: frozenset[str]
    since: float


def select_removals(
    unwanted: Iterable[Unwanted], *, now: float, grace: float, keep_previous: int
) -> list[str]:
    """Run ids to remove: past the grace period and not among the newest `keep_previous`
    folders of any of their models (newest = most recently stopped being wanted)."""
    items = list(unwanted)
    by_model: dict[str, list[Unwanted]] = defaultdict(list)
    for item in items:
        for model in item.models:
            by_model[model].append(item)
    kept: set[str] = set()
    for candidates in by_model.values():
        newest_first = sorted(candidates, key=lambda item: (item.since, item.run_id), reverse=True)
        kept.update(item.run_id for item in newest_first[:keep_previous])
    return sorted(
        item.run_id for item in items if item.run_id not in kept and now - item.since >= grace
    )
