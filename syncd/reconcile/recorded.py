"""Damage a verify recorded against a run (on any host), as the syncer takes it in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from syncd.core.folder_plan import Suspicion
from syncd.core.manifest import FileEntry, Span
from syncd.local.store import LocalStore
from syncd.local.verify import RateLimiter, damaged_spans, verify_manifest

__all__ = ["RecordedDamage", "damaged_spans_or_none", "recorded_damage"]


def recorded_damage(store: LocalStore, run_id: str) -> RecordedDamage:
    """What the root's damage record names; for an unreadable record, what a verify of the
    whole published folder finds, and the record is then cleared whole after the sync."""
    recorded = store.damage.read(run_id)
    if recorded is not None:
        return RecordedDamage(recorded, bool(recorded) or store.damage.has(run_id))
    manifest = store.read_manifest(run_id)
    found: dict[str, tuple[Span, ...] | None] = {}
    if manifest is not None:
        for problem in verify_manifest(store.run_dir(run_id), manifest, RateLimiter(None)):
            found[problem.path] = problem.spans or None
    return RecordedDamage(found, True, whole_run=True)


@dataclass(frozen=True)
class RecordedDamage:
    """Damage the root records against a run, and whether a record is there to clear."""

    found: Suspicion
    exists: bool
    whole_run: bool = False  # the record was unreadable: cleared whole once repaired

    def clear(self, store: LocalStore, run_id: str) -> None:
        if self.exists:
            store.damage.clear(run_id, None if self.whole_run else self.found)


def damaged_spans_or_none(path: Path, entry: FileEntry) -> tuple[Span, ...] | None:
    """Which recorded ranges of a touched file changed; None (fetch it whole) if unreadable."""
    try:
        return damaged_spans(path, entry, RateLimiter(None))
    except OSError:
        return None
