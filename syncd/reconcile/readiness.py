"""Readiness: what /readyz answers and the page's banner says, from what is known (pure)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from syncd.reconcile.queue import Key
from syncd.reconcile.registry_health import RegistryHealth

if TYPE_CHECKING:
    from syncd.reconcile.status import FolderStatus

__all__ = ["Readiness", "readiness"]


@dataclass(frozen=True)
class Readiness:
    """The answer of /readyz and the page's banner."""

    ready: bool
    state: Literal[
        "starting",
        "synced",
        "syncing",
        "standby",
        "registry_unreachable",
        "storage_unreachable",
        "nothing_matches",
    ]
    detail: str


def readiness(
    registry: RegistryHealth, folders: Mapping[Key, FolderStatus], first_pass_done: bool
) -> Readiness:
    """Ready once the first pass is done; says what it knows, not only yes or no."""
    unreachable = {name: e for name, e in registry.target_errors.items() if e is not None}
    if unreachable:
        name, error = sorted(unreachable.items())[0]
        since = time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(registry.target_error_since.get(name, 0))
        )
        return Readiness(
            False,
            "registry_unreachable",
            f"could not reach the registry since {since} ({name}: {error})",
        )
    if not first_pass_done:
        return Readiness(False, "starting", "first reconcile pass not finished")
    store = _store_unreachable(registry.store_unreachable, registry.model_errors, folders)
    if store is not None:
        return Readiness(False, "storage_unreachable", store)
    missing = sorted({name for names in registry.missing.values() for name in names})
    unknown = f"; not registered: {', '.join(missing)}" if missing else ""
    serving = [f for f in folders.values() if f.role == "serving"]
    if not serving:
        return Readiness(True, "nothing_matches", f"no model matches any target's pointer{unknown}")
    synced = sum(1 for f in serving if f.state == "synced")
    if synced == len(serving):
        return Readiness(True, "synced", f"{synced} folder(s) in place{unknown}")
    if all(f.state in ("synced", "standby") for f in serving):
        # Another process writes these roots: this one is not stuck, it is waiting its turn.
        return Readiness(
            True,
            "standby",
            f"standby: another syncd writes the root; {len(serving)} folder(s) wanted{unknown}",
        )
    return Readiness(True, "syncing", f"{synced} of {len(serving)} folder(s) in place{unknown}")


def _store_unreachable(
    unreachable: set[tuple[str, str]],
    model_errors: dict[tuple[str, str], str],
    folders: Mapping[Key, FolderStatus],
) -> str | None:
    """Why a wanted serving folder cannot be had because the artifact store cannot be
    reached (its model_context.json or its binaries), or None. A folder in place is not
    held against readiness: the endpoint can load it whatever S3 does."""
    first = min(unreachable, default=None)
    if first is not None:
        target, model = first
        return f"cannot reach the artifact store (S3) for {target}/{model}: " + (
            model_errors.get(first, "")
        )
    for folder in folders.values():
        # Kept while a retry runs, so the probe does not flap between attempts.
        if folder.role == "serving" and folder.state != "synced" and folder.unreachable:
            return (
                f"cannot reach the artifact store (S3) for {folder.target}/{folder.model}"
                f" v{folder.version}: {folder.error}"
            )
    return None
