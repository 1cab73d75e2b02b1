"""Retention as its own step: mark folders no target wants, remove them after the grace period.

The policy (which unwanted folders go) is pure, in `core.retention`; this step gathers the
facts from the manifests and writes the marks through the local store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from syncd.core.manifest import Manifest
from syncd.core.retention import Unwanted, plan_retention
from syncd.local.store import LocalStore

__all__ = ["Kept", "Removal", "collect_garbage"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Removal:
    """A folder retention removed, and whose it was (for the log, the page and metrics)."""

    run_id: str
    target: str
    owner: str


@dataclass(frozen=True)
class Kept:
    """A folder no target wants that retention keeps for a rollback, and until when
    (`until` None: while it is among the newest `keep_previous` of its model)."""

    run_id: str
    target: str
    owner: str
    unwanted_since: float
    until: float | None

    def as_json(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "was": self.owner,
            "unwanted_since": self.unwanted_since,
            "removed_after": self.until,
        }


def collect_garbage(
    store: LocalStore,
    targets: set[str],
    wanted: set[str],
    failing_models: set[str],
    *,
    grace: float,
    keep_previous: int,
) -> tuple[list[Removal], list[Kept]]:
    """Remove folders these targets made and no longer want, after `grace` seconds; return
    what was removed and what is kept for a rollback.

    Call it only after a poll in which every target of the root answered, so an outage or a
    model that failed to resolve never looks like "nobody wants this any more".
    """
    now = time.time()
    unwanted: list[Unwanted] = []
    owners: dict[str, tuple[str, str]] = {}
    for manifest in store.manifests_on_disk():
        ours = [w for w in manifest.wanted_by if w.target in targets]
        if not ours:
            continue  # made by a one-shot sync or for another root's target: not ours
        models = {w.model for w in ours}
        if manifest.run_id in wanted or models & failing_models:
            if manifest.unwanted_since is not None:
                store.update_manifest(manifest.run_id, _mark(None))
            continue
        since = manifest.unwanted_since
        if since is None:
            since = now
            store.update_manifest(manifest.run_id, _mark(now))
            log.info("run %s is no longer wanted; kept for %.0fs", manifest.run_id, grace)
        unwanted.append(Unwanted(manifest.run_id, frozenset(models), since))
        owners[manifest.run_id] = (ours[-1].target, f"{ours[-1].model} v{ours[-1].version}")
    plan = plan_retention(unwanted, now=now, grace=grace, keep_previous=keep_previous)
    removed = []
    for run_id in plan.removals:
        store.remove(run_id)
        target, owner = owners[run_id]
        log.warning("removed run %s (%s: %s): no target wants it", run_id, target, owner)
        removed.append(Removal(run_id, target, owner))
    unwanted_at = {item.run_id: item.since for item in unwanted}
    kept = [
        Kept(run_id, *owners[run_id], unwanted_at[run_id], until)
        for run_id, until in plan.kept.items()
    ]
    return removed, kept


def _mark(since: float | None) -> Callable[[Manifest | None], Manifest | None]:
    def change(current: Manifest | None) -> Manifest | None:
        return None if current is None else replace(current, unwanted_since=since)

    return change
