"""One rebuild of a run folder: what it works from, what it says, and what it did."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from syncd.core.completion import to_completion
from syncd.core.desired import DesiredModel
from syncd.core.folder_plan import FolderPlan, fetch_instead, files_said
from syncd.core.manifest import Manifest, RemoteObject, WantedBy
from syncd.core.reuse import reused_from
from syncd.local.resume import ResumeState
from syncd.local.staging import prepare_staging
from syncd.local.store import LocalStore
from syncd.reconcile.outcome import SyncOutcome, SyncProgress
from syncd.remote.source import Location

__all__ = [
    "Build",
    "announce",
    "count_totals",
    "healed_said",
    "outcome_of",
    "say_if_resumed",
    "staged",
]

log = logging.getLogger("syncd.reconcile.syncer")


@dataclass(frozen=True)
class Build:
    """Everything one rebuild of a run folder works from."""

    store: LocalStore
    target: str
    desired: DesiredModel
    location: Location
    listing: list[RemoteObject]
    manifest: Manifest | None
    wanted: WantedBy
    plan: FolderPlan


def outcome_of(plan: FolderPlan, progress: SyncProgress, manifest: Manifest) -> SyncOutcome:
    shared = plan.shared.values()
    return SyncOutcome(
        "synced",
        manifest.run_id,
        len(plan.fetch) + len(plan.patch),
        progress.total_bytes,
        len(plan.reuse),
        manifest,
        patched_files=len(plan.patch),
        shared_files=len(plan.shared),
        shared_bytes=sum(item.obj.size for item in shared),
        shared_from=tuple(sorted({item.source.run_id for item in shared})),
    )


def count_totals(plan: FolderPlan, progress: SyncProgress) -> None:
    progress.total_files = len(plan.fetch) + len(plan.patch)
    progress.total_bytes = plan.fetch_bytes


def announce(build: Build, progress: SyncProgress) -> None:
    shared = reused_from(build.plan.shared)
    log.info(
        "%s: syncing %s v%s run %s from %s: %d bytes to download (%s), %d file(s) kept%s",
        build.target,
        build.desired.model,
        build.desired.ref.version,
        build.desired.run_id,
        build.location.uri,
        progress.total_bytes,
        files_said(len(build.plan.fetch), len(build.plan.patch)),
        len(build.plan.reuse),
        f", {shared}" if shared else "",
    )


async def say_if_resumed(build: Build, resume: ResumeState, progress: SyncProgress) -> None:
    resumed = await asyncio.to_thread(resume.bytes_on_disk)
    if resumed:
        log.info(
            "%s: resuming an interrupted sync of run %s: %.1f of %.1f MB already on disk "
            "(re-checked, not fetched again)",
            build.target,
            build.desired.run_id,
            resumed / 1e6,
            progress.total_bytes / 1e6,
        )


async def staged(build: Build, staging: Path, progress: SyncProgress) -> Build:
    """Staging prepared from the published folder; files that vanished from it since the
    plan was made (a folder deleted mid-repair) are fetched instead."""
    folder = build.store.run_dir(build.desired.run_id)
    vanished = await to_completion(
        asyncio.to_thread(prepare_staging, staging, folder, build.listing, build.plan)
    )
    if not vanished:
        return build
    log.warning(
        "%s: %s vanished while run %s was being rebuilt: fetching instead",
        build.target,
        ", ".join(sorted(vanished)),
        build.desired.run_id,
    )
    plan = fetch_instead(build.plan, vanished, build.listing)
    progress.total_files = len(plan.fetch) + len(plan.patch)
    progress.total_bytes = plan.fetch_bytes
    return replace(build, plan=plan)


def healed_said(path: str, reason: str, plan: FolderPlan) -> str:
    patch = plan.patch.get(path)
    if patch is None:
        return f"{path} ({reason})"
    return (
        f"{path} ({reason}, {patch.damaged_bytes} bytes in {len(patch.spans)} range(s) refetched)"
    )
