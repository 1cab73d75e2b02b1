"""ensure(): make one run folder match its source, verified, published in one rename."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from syncd import __version__
from syncd.core.ids import safe_relative_path
from syncd.core.manifest import FileEntry, Manifest, RemoteObject, WantedBy, differences
from syncd.errors import LocalStoreError, SourceError, UnsafeKeyError, primary_error
from syncd.local.store import LocalStore
from syncd.metrics import Metrics
from syncd.remote.registry import DesiredModel
from syncd.remote.source import Sources
from syncd.transfer.engine import Downloader
from syncd.transfer.resume import ResumeState

__all__ = ["SyncOutcome", "SyncProgress", "Syncer", "check_listing"]

log = logging.getLogger(__name__)

# Local I/O failures a person must act on (not bugs, not the network): reported as such.
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO, errno.EFBIG}


@dataclass
class SyncProgress:
    """Live counters of one sync, read by the progress bar and the status page."""

    total_bytes: int = 0
    done_bytes: int = 0
    total_files: int = 0
    done_files: int = 0
    started: float = field(default_factory=time.monotonic)
    listeners: list[Callable[[int], None]] = field(default_factory=list)

    def add(self, count: int) -> None:
        self.done_bytes += count
        for listener in self.listeners:
            listener(count)


@dataclass(frozen=True)
class SyncOutcome:
    """What ensure() did for one run folder."""

    result: Literal["noop", "synced"]
    run_id: str
    downloaded_files: int
    downloaded_bytes: int
    reused_files: int
    manifest: Manifest
    # paths of a folder synced before that were rebuilt, and why (missing_file, size, ...)
    healed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the whole ensure(), set by the caller that timed it


def check_listing(listing: list[RemoteObject]) -> None:
    """Refuse listings that cannot become a folder: unsafe keys, a file that is also a folder."""
    paths = {safe_relative_path(obj.path) for obj in listing}
    for path in paths:
        parent = path.rsplit("/", 1)[0] if "/" in path else None
        while parent:
            if parent in paths:
                raise UnsafeKeyError(path, f"{parent!r} is both a file and a folder")
            parent = parent.rsplit("/", 1)[0] if "/" in parent else None


class Syncer:
    """Compares a run folder with its source and rebuilds what differs."""

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
        distrust: frozenset[str] = frozenset(),
    ) -> SyncOutcome:
        """Make `{root}/{run_id}` hold exactly the source's files, verified; idempotent.

        `distrust` names published files known bad though they look intact (deep verify found
        them altered): they are downloaded again, never linked.
        """
        progress = progress or SyncProgress()
        location = self._sources.locate(desired.source_uri)
        listing = await self._sources.list_objects(location)
        if not listing:
            raise SourceError(
                f"{desired.model} v{desired.ref.version}: nothing under {location.uri} "
                f"(run {desired.run_id}, found by {desired.basis.replace('_', ' ')}); "
                "were the binaries logged to that run under this artifact path?"
            )
        check_listing(listing)
        wanted = WantedBy(target, desired.model, desired.ref.selector, desired.ref.version)
        manifest = store.read_manifest(desired.run_id)
        stale = differences(manifest, listing)
        damaged = store.damaged(manifest) if manifest is not None else {}
        damaged.update({path: "checksum" for path in distrust})
        if manifest is not None and not stale and not damaged:
            if wanted not in manifest.wanted_by:
                store.write_manifest(replace(manifest, wanted_by=(*manifest.wanted_by, wanted)))
            return SyncOutcome("noop", desired.run_id, 0, 0, 0, manifest)
        outcome = await self._rebuild(
            store, target, desired, listing, manifest, wanted, progress, damaged
        )
        if manifest is not None and damaged:
            log.warning(
                "%s: healed %s v%s run %s: %s",
                target,
                desired.model,
                desired.ref.version,
                desired.run_id,
                ", ".join(f"{path} ({reason})" for path, reason in sorted(damaged.items())),
            )
            outcome = replace(outcome, healed=damaged)
        return outcome

    async def _rebuild(
        self,
        store: LocalStore,
        target: str,
        desired: DesiredModel,
        listing: list[RemoteObject],
        manifest: Manifest | None,
        wanted: WantedBy,
        progress: SyncProgress,
        damaged: dict[str, str],
    ) -> SyncOutcome:
        folder = store.run_dir(desired.run_id)
        location = self._sources.locate(desired.source_uri)
        reusable = _reusable_entries(store, manifest, listing, set(damaged))
        to_fetch = [obj for obj in listing if obj.path not in reusable]
        progress.total_files = len(to_fetch)
        progress.total_bytes = sum(obj.size for obj in to_fetch)
        store.check_space(progress.total_bytes)
        log.info(
            "%s: syncing %s v%s run %s: %d files, %d bytes from %s (%d kept)",
            target,
            desired.model,
            desired.ref.version,
            desired.run_id,
            len(to_fetch),
            progress.total_bytes,
            location.uri,
            len(reusable),
        )
        staging = store.resume_staging(desired.run_id)
        resume = store.resume_state(desired.run_id)
        published = interrupted = False
        try:
            # A build interrupted earlier may hold files the source no longer has: never publish
            # those.
            await asyncio.to_thread(_prune, staging, {obj.path for obj in listing})
            entries: dict[str, FileEntry] = {}
            for path, entry in reusable.items():
                destination = staging / path
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.unlink(missing_ok=True)
                os.link(folder / path, destination)
                entries[path] = entry

            async def fetch(obj: RemoteObject) -> None:
                destination = staging / obj.path
                entry = await self._sources.download(
                    self._downloader, location, obj, destination, progress.add, resume
                )
                entries[obj.path] = replace(entry, mtime_ns=destination.stat().st_mtime_ns)
                progress.done_files += 1

            try:
                async with asyncio.TaskGroup() as group:
                    for obj in to_fetch:
                        group.create_task(fetch(obj))
            except BaseExceptionGroup as failed:
                raise primary_error(failed) from failed
            new_manifest = Manifest(
                run_id=desired.run_id,
                source_uri=location.uri,
                files=tuple(entries[obj.path] for obj in sorted(listing, key=lambda o: o.path)),
                wanted_by=_merge_wanted(manifest, wanted),
                synced_at=time.time(),
                syncd_version=__version__,
            )
            await asyncio.to_thread(store.flush, staging)
            store.publish(staging, desired.run_id, owned=manifest is not None)
            published = True
            store.write_manifest(new_manifest)
            resume.clear()
        except OSError as exc:
            if exc.errno not in _LOCAL_ERRNOS:
                raise
            # A full disk, a quota, a read-only or failing volume: one clear line that names
            # the root and the need; the failed build is discarded below, freeing its space.
            where = Path(exc.filename).name if exc.filename else "the dataset"
            raise LocalStoreError(
                f"{store.root}: {os.strerror(exc.errno or 0).lower()} while writing {where} "
                f"(this sync needs {progress.total_bytes} bytes there)"
            ) from exc
        except asyncio.CancelledError:
            # Stopped (SIGTERM): keep what is on disk so the next start fetches only the rest.
            # Nothing half-built is ever published: it stays in staging.
            interrupted = True
            raise
        finally:
            if not published and not interrupted:
                # A failed build is not trusted: start clean next time. Shielded from
                # cancellation so it always completes.
                await asyncio.shield(asyncio.to_thread(_discard_build, store, staging, resume))
        self._metrics.downloaded_files.labels(target=target).inc(len(to_fetch))
        self._metrics.reused_files.labels(target=target).inc(len(reusable))
        unverified = [entry for entry in new_manifest.unverified if entry.path not in reusable]
        if unverified:
            self._metrics.unverified_files.labels(target=target).inc(len(unverified))
            log.warning(
                "%s: %d file(s) of run %s could only be size-checked: %s",
                target,
                len(unverified),
                desired.run_id,
                unverified[0].note,
            )
        return SyncOutcome(
            "synced",
            desired.run_id,
            len(to_fetch),
            progress.total_bytes,
            len(reusable),
            new_manifest,
        )


def _merge_wanted(manifest: Manifest | None, wanted: WantedBy) -> tuple[WantedBy, ...]:
    previous = manifest.wanted_by if manifest else ()
    return previous if wanted in previous else (*previous, wanted)


def _reusable_entries(
    store: LocalStore, manifest: Manifest | None, listing: list[RemoteObject], damaged: set[str]
) -> dict[str, FileEntry]:
    """Published files still matching the source and untouched on disk: linked, not fetched."""
    if manifest is None:
        return {}
    folder = store.run_dir(manifest.run_id)
    if not folder.is_dir():
        return {}
    previous = {entry.path: entry for entry in manifest.files}
    reusable = {}
    for obj in listing:
        entry = previous.get(obj.path)
        if entry is None or obj.path in damaged or obj.etag is None:
            continue
        if entry.size != obj.size or entry.etag != obj.etag:
            continue
        try:
            stat = (folder / obj.path).stat()
        except OSError:
            continue
        if stat.st_size == entry.size:
            reusable[obj.path] = replace(entry, mtime_ns=stat.st_mtime_ns)
    return reusable


def _prune(staging: Path, wanted: set[str]) -> None:
    """Delete files under `staging` that are not in `wanted` (relative paths), and the
    folders that leaves empty (children come before their parents in reverse order)."""
    for path in sorted(staging.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.relative_to(staging).as_posix() not in wanted:
            path.unlink()


def _discard_build(store: LocalStore, staging: Path, resume: ResumeState) -> None:
    store.discard(staging)
    resume.clear()
