"""Which unwanted run folders go, and which stay for a rollback (pure)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Retention", "Unwanted", "plan_retention", "select_removals"]


@dataclass(frozen=True)
class Unwanted:
    """A folder syncd made that no target wants now, and since when."""

    run_id: str
    models: frozenset[str]
    since: float


@dataclass(frozen=True)
class Retention:
    """What retention does with the unwanted folders: which go now, and which stay until when
    (`None`: kept as one of the newest `keep_previous` of a model, for as long as it is)."""

    removals: list[str]
    kept: dict[str, float | None]


def plan_retention(
    unwanted: Iterable[Unwanted], *, now: float, grace: float, keep_previous: int
) -> Retention:
    """Folders past the grace period go, unless among the newest `keep_previous` folders of
    any of their models (newest = most recently stopped being wanted); the rest stay."""
    items = list(unwanted)
    by_model: dict[str, list[Unwanted]] = defaultdict(list)
    for item in items:
        for model in item.models:
            by_model[model].append(item)
    previous: set[str] = set()
    for candidates in by_model.values():
        newest_first = sorted(candidates, key=lambda item: (item.since, item.run_id), reverse=True)
        previous.update(item.run_id for item in newest_first[:keep_previous])
    removals: list[str] = []
    kept: dict[str, float | None] = {}
    for item in sorted(items, key=lambda item: item.run_id):
        if item.run_id in previous:
            kept[item.run_id] = None
        elif now - item.since >= grace:
            removals.append(item.run_id)
        else:
            kept[item.run_id] = item.since + grace
    return Retention(removals, kept)


def select_removals(
    unwanted: Iterable[Unwanted], *, now: float, grace: float, keep_previous: int
) -> list[str]:
    """Run ids to remove now (see `plan_retention`)."""
    return plan_retention(unwanted, now=now, grace=grace, keep_previous=keep_previous).removals
