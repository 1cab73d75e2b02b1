"""ensure(): make one run folder match its source, verified, published in one rename."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from syncd import __version__
from syncd.core.completion import all_or_first_error, to_completion
from syncd.core.desired import DesiredModel
from syncd.core.folder_plan import (
    FolderPlan,
    Patch,
    Suspicion,
    merge_suspicion,
    plan_folder,
    worth_range_check,
)
from syncd.core.ids import safe_relative_path
from syncd.core.manifest import FileEntry, Manifest, RemoteObject, WantedBy
from syncd.errors import (
    ChecksumMismatchError,
    SourceMissingError,
    UnsafeKeyError,
    quoted,
)
from syncd.local.resume import ResumeState
from syncd.local.shared import Inode, inodes_of, spread_repair
from syncd.local.staging import discard_build, local_failure, publish_build
from syncd.local.store import LocalStore
from syncd.metrics import Metrics
from syncd.reconcile.build import (
    Build,
    announce,
    count_totals,
    healed_said,
    outcome_of,
    say_if_resumed,
    staged,
)
from syncd.reconcile.outcome import SyncOutcome, SyncProgress
from syncd.reconcile.recorded import RecordedDamage, damaged_spans_or_none, recorded_damage
from syncd.reconcile.reuse import find_on_disk, take_in
from syncd.remote.source import Sources
from syncd.transfer.engine import Downloader

__all__ = ["SyncOutcome", "SyncProgress", "Syncer", "check_listing"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Local I/O failures a person must act on (not bugs, not the network): reported as such.
_LOCAL_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EIO,
    errno.EFBIG,
    errno.EMFILE,
    errno.ENFILE,
}


def check_listing(listing: list[RemoteObject]) -> None:
    """Refuse listings that cannot become a folder: unsafe keys, a file that is also a folder."""
    paths = {safe_relative_path(obj.path) for obj in listing}
    for path in paths:
        parent = path.rsplit("/", 1)[0] if "/" in path else None
        while parent:
            if parent in paths:
                raise UnsafeKeyError(path, f"{quoted(parent)} is both a file and a folder")
            parent = parent.rsplit("/", 1)[0] if "/" in parent else None


class Syncer:
    """Compares a run folder with its source and rebuilds what differs.

    The I/O shell around `core.folder_plan`: it gathers the facts, lets the plan decide, and
    carries the plan out, with every blocking file-system call in a worker thread.
    """

    def __init__(self, sources: Sources, downloader: Downloader, metrics: Metrics) -> None:
        self._sources = sources
        self._downloader = downloader
        self._metrics = metrics

    async def ensure(
        self,
        store: LocalStore,
        target: str,
        desired: DesiredModel,
        progress: SyncProgress | None = None,
        distrust: Suspicion | None = None,
    ) -> SyncOutcome:
        """Make `{root}/{run_id}` hold exactly the source's files, verified; idempotent.

        `distrust` names published files known bad though they look intact (deep verify found
        them altered), with their damaged ranges where known: only those are fetched again.
        """
        progress = progress or SyncProgress()
        # Damage a verify recorded in the root (on any host) is repaired like deep verify's;
        # a record that cannot be read fails closed: the whole folder is verified instead.
        recorded = await asyncio.to_thread(recorded_damage, store, desired.run_id)
        distrust = merge_suspicion(distrust or {}, recorded.found)
        location = self._sources.locate(desired.source_uri)
        listing = await self._sources.list_objects(location)
        if not listing:
            raise SourceMissingError(
                f"{desired.model} v{desired.ref.version}: nothing under {location.uri} "
                f"(run {desired.run_id}, found by {desired.basis.replace('_', ' ')}); "
                "were the binaries logged to that run under this artifact path?"
            )
        check_listing(listing)
        wanted = WantedBy(target, desired.model, desired.ref.selector, desired.ref.version)
        manifest = await asyncio.to_thread(store.read_manifest, desired.run_id)
        plan = await self._plan(store, manifest, listing, distrust)
        if plan.noop:
            assert manifest is not None
            await self._already_in_place(store, manifest, wanted, recorded)
            return SyncOutcome("noop", desired.run_id, 0, 0, 0, manifest)
        build = Build(store, target, desired, location, listing, manifest, wanted, plan)
        outcome = await self._carry_out(build, progress)
        await to_completion(asyncio.to_thread(recorded.clear, store, desired.run_id))
        if manifest is not None and plan.heal:
            log.warning(
                "%s: healed %s v%s run %s: %s",
                target,
                desired.model,
                desired.ref.version,
                desired.run_id,
                ", ".join(
                    healed_said(path, reason, plan) for path, reason in sorted(plan.heal.items())
                ),
            )
            outcome = replace(outcome, healed=dict(plan.heal))
        return outcome

    async def _already_in_place(
        self,
        store: LocalStore,
        manifest: Manifest,
        wanted: WantedBy,
        recorded: RecordedDamage,
    ) -> None:
        """Nothing to fetch: the folder is recorded as wanted this way too, and the damage a
        verify recorded is cleared (nothing it names is still wrong, or still listed)."""
        run_id = manifest.run_id
        if wanted not in manifest.wanted_by:

            def add_wanted(current: Manifest | None) -> Manifest | None:
                if current is None or wanted in current.wanted_by:
                    return None
                return replace(current, wanted_by=(*current.wanted_by, wanted))

            await to_completion(asyncio.to_thread(store.update_manifest, run_id, add_wanted))
        await to_completion(asyncio.to_thread(recorded.clear, store, run_id))

    async def _plan(
        self,
        store: LocalStore,
        manifest: Manifest | None,
        listing: list[RemoteObject],
        distrust: Suspicion,
    ) -> FolderPlan:
        """Gather the local facts the plan needs: `lstat` of each file, and for files touched
        in place, which recorded ranges no longer hash as they did."""
        if manifest is None:
            return plan_folder(None, listing, None)
        local = await asyncio.to_thread(store.local_facts, manifest)
        suspicion = dict(distrust)
        folder = store.run_dir(manifest.run_id)
        entries = {entry.path: entry for entry in manifest.files}
        for path in worth_range_check(manifest, local):
            if path not in suspicion:
                suspicion[path] = await asyncio.to_thread(
                    damaged_spans_or_none, folder / path, entries[path]
                )
        return plan_folder(manifest, listing, local, suspicion)

    async def _carry_out(self, build: Build, progress: SyncProgress) -> SyncOutcome:
        store, run_id = build.store, build.desired.run_id
        plan = await find_on_disk(store, run_id, build.location, build.plan, self._downloader)
        build = replace(build, plan=plan)
        # Inodes other folders may share, taken before the swap replaces them.
        damaged = await asyncio.to_thread(inodes_of, store, run_id, sorted(plan.heal))
        count_totals(plan, progress)
        copies = sum(patch.entry.size for patch in plan.patch.values())
        await asyncio.to_thread(store.check_space, progress.total_bytes + copies)
        announce(build, progress)
        staging = await to_completion(asyncio.to_thread(store.resume_staging, run_id))
        resume = store.resume_state(run_id)
        await say_if_resumed(build, resume, progress)
        published = interrupted = False
        try:
            build = await staged(build, staging, progress)
            build = replace(build, plan=await take_in(store, staging, build.plan))
            plan = build.plan
            count_totals(plan, progress)
            entries = await self._transfer(build, staging, resume, progress)
            new_manifest = Manifest(
                run_id=run_id,
                source_uri=build.location.uri,
                files=tuple(entries[path] for path in sorted(entries)),
                wanted_by=_merge_wanted(build.manifest, build.wanted),
                synced_at=time.time(),
                syncd_version=__version__,
            )
            # Shielded: once the swap starts, it finishes with its manifest written, whatever
            # arrives meanwhile; and a cancelled ensure returns only once it has (the
            # simulation found a cancelled sync's publish still running while the next sync
            # of the same run began).
            await to_completion(
                asyncio.to_thread(
                    publish_build, store, staging, new_manifest, resume, build.manifest
                )
            )
            published = True
        except OSError as exc:
            if exc.errno not in _LOCAL_ERRNOS:
                raise
            raise local_failure(store, exc, progress.total_bytes) from exc
        except asyncio.CancelledError:
            # Stopped (SIGTERM): keep what is on disk so the next start fetches only the rest.
            # Nothing half-built is ever published: it stays in staging.
            interrupted = True
            raise
        finally:
            if not published and not interrupted:
                # A failed build is not trusted: start clean next time. Shielded from
                # cancellation so it always completes.
                await to_completion(asyncio.to_thread(discard_build, store, staging, resume))
        await self._spread(store, new_manifest, damaged)
        self._account(build, new_manifest)
        return outcome_of(plan, progress, new_manifest)

    async def _spread(
        self, store: LocalStore, manifest: Manifest, damaged: dict[str, Inode]
    ) -> None:
        """A repaired file other folders shared is repaired in them too (best effort: the
        sync itself is done; what is left, a heal of that folder finds)."""
        try:
            await to_completion(asyncio.to_thread(spread_repair, store, manifest, damaged))
        except OSError as exc:
            log.warning(
                "run %s: could not repair the folders sharing its files: %s", manifest.run_id, exc
            )

    async def _transfer(
        self, build: Build, staging: Path, resume: ResumeState, progress: SyncProgress
    ) -> dict[str, FileEntry]:
        """Fetch and patch what the plan says, all at once under the downloader's limits."""
        entries = dict(build.plan.reuse)
        entries.update({path: item.entry for path, item in build.plan.shared.items()})

        async def settle(path: str, entry: FileEntry) -> None:
            if entry.mtime_ns is None:  # the engine records it as it closes the file
                stat = await asyncio.to_thread(os.stat, staging / path)
                entry = replace(entry, mtime_ns=stat.st_mtime_ns)
            entries[path] = entry
            progress.done_files += 1

        async def fetch(obj: RemoteObject) -> None:
            entry = await self._downloader.download(
                build.location.child(obj.path), obj, staging / obj.path, progress.add, resume
            )
            await settle(obj.path, entry)

        async def patch(obj: RemoteObject, patch: Patch) -> None:
            try:
                entry = await self._downloader.repair(
                    build.location.child(obj.path),
                    patch.entry,
                    staging / obj.path,
                    patch.spans,
                    progress.add,
                )
            except ChecksumMismatchError as exc:
                log.warning("%s: %s; downloading the whole file", build.target, exc)
                progress.total_bytes += obj.size - patch.damaged_bytes
                entry = await self._downloader.download(
                    build.location.child(obj.path), obj, staging / obj.path, progress.add
                )
            await settle(obj.path, entry)

        await all_or_first_error(
            [
                patch(obj, build.plan.patch[obj.path])
                if obj.path in build.plan.patch
                else fetch(obj)
                for obj in build.listing
                if obj.path in build.plan.patch or obj.path not in entries
            ]
        )
        return entries

    def _account(self, build: Build, manifest: Manifest) -> None:
        """Metrics for a finished build, and a warning for files only their size vouches for."""
        plan, target = build.plan, build.target
        self._metrics.downloaded_files.labels(target=target).inc(len(plan.fetch) + len(plan.patch))
        self._metrics.reused_files.labels(target=target).inc(len(plan.reuse))
        self._metrics.shared_files.labels(target=target).inc(len(plan.shared))
        shared_bytes = sum(item.obj.size for item in plan.shared.values())
        self._metrics.shared_bytes.labels(target=target).inc(shared_bytes)
        unverified = [entry for entry in manifest.unverified if entry.path not in plan.reuse]
        if unverified:
            self._metrics.unverified_files.labels(target=target).inc(len(unverified))
            log.warning(
                "%s: %d file(s) of run %s could only be size-checked: %s",
                target,
                len(unverified),
                build.desired.run_id,
                unverified[0].note,
            )


def _merge_wanted(manifest: Manifest | None, wanted: WantedBy) -> tuple[WantedBy, ...]:
    previous = manifest.wanted_by if manifest else ()
    return previous if wanted in previous else (*previous, wanted)
