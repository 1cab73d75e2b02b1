"""Before a build downloads a file, the root's other run folders are asked for it by strong
identity (`core.reuse`); what one holds intact is taken from disk, not the network."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path

from syncd.core.completion import all_or_first_error, to_completion
from syncd.core.folder_plan import FolderPlan
from syncd.core.manifest import RemoteObject
from syncd.core.plan import ObjectFacts, is_md5_etag
from syncd.core.reuse import OnDisk, Reusable, identity_of_entry, index, match
from syncd.errors import SyncdError
from syncd.local.shared import bring_in, recorded_on_disk
from syncd.local.store import LocalStore
from syncd.remote.source import Location
from syncd.transfer.engine import Downloader

__all__ = ["find_on_disk", "take_in"]

log = logging.getLogger(__name__)


async def find_on_disk(
    store: LocalStore, run_id: str, location: Location, plan: FolderPlan, downloader: Downloader
) -> FolderPlan:
    """The plan with every file to fetch that another folder holds intact moved to `shared`.

    Only objects some recorded file could match are HEAD (one request each, 16 at a time,
    retried as the download's would be); where only single-part MD5 ETags are compared, the
    listing's ETag is enough."""
    if not plan.fetch or not await downloader.states_facts(location):
        return plan  # the MLflow proxy states no checksum: nothing to match by
    by_size = await asyncio.to_thread(lambda: index(store.manifests_on_disk(), run_id))
    taken: dict[str, Reusable] = {}
    looking = asyncio.Semaphore(_AT_ONCE)

    async def look(obj: RemoteObject, candidates: list[OnDisk]) -> None:
        async with looking:
            facts = await _facts(obj, candidates, location, downloader)
            if facts is None:
                return
            for item in match(obj, facts, candidates, time.time()):
                # lstat only here: the bytes are hashed once, as they are taken in.
                if await asyncio.to_thread(recorded_on_disk, store, item.source) is not None:
                    taken[obj.path] = item
                    return

    looks = []
    for obj in plan.fetch:
        candidates = [c for c in by_size.get(obj.size, ()) if _may_match(c, obj)]
        if candidates:
            looks.append(look(obj, candidates))
    await all_or_first_error(looks)
    return with_shared(plan, taken)


_AT_ONCE = 16  # HEADs and local re-checks in flight


def _may_match(candidate: OnDisk, obj: RemoteObject) -> bool:
    """Worth a HEAD: a checksum may match, or the listed ETag already does (where the
    listing's ETag is the MD5 compared; elsewhere only a HEAD tells)."""
    if _kind(candidate) not in ("md5", "md5-multipart") or not _md5_listed(obj):
        return True
    return candidate.entry.etag == obj.etag


def _md5_listed(obj: RemoteObject) -> bool:
    """The listing's ETag is an S3-style MD5 (single-part, or multipart with -N)."""
    etag = obj.etag or ""
    return is_md5_etag(etag.split("-", 1)[0])


def _kind(candidate: OnDisk) -> str:
    identity = identity_of_entry(candidate.entry)
    assert identity is not None  # the index holds strongly identified files only
    return identity[0]


async def _facts(
    obj: RemoteObject, candidates: list[OnDisk], location: Location, downloader: Downloader
) -> ObjectFacts | None:
    """What the object states: the listing's ETag where only single-part MD5s are matched,
    else a HEAD (None when it fails: the download then reports it in its own words)."""
    if obj.etag and is_md5_etag(obj.etag) and all(_kind(c) == "md5" for c in candidates):
        return ObjectFacts(size=obj.size, etag=obj.etag)
    try:
        return await downloader.object_facts(location.child(obj.path), obj)
    except SyncdError:
        return None


def with_shared(plan: FolderPlan, taken: dict[str, Reusable]) -> FolderPlan:
    if not taken:
        return plan
    return replace(
        plan,
        fetch=tuple(obj for obj in plan.fetch if obj.path not in taken),
        shared={**plan.shared, **taken},
    )


async def take_in(store: LocalStore, staging: Path, plan: FolderPlan) -> FolderPlan:
    """The shared files linked (or copied) into staging and re-checked there; any that
    changed since the plan are fetched instead."""
    if not plan.shared:
        return plan
    kept: dict[str, Reusable] = {}
    lost: list[RemoteObject] = []
    for path, item in plan.shared.items():
        brought = await to_completion(asyncio.to_thread(bring_in, store, item, staging / path))
        if brought is None:
            log.warning("%s of run %s changed on disk: fetching it", path, item.source.run_id)
            lost.append(item.obj)
        else:
            kept[path] = brought
    if not lost:
        return replace(plan, shared=kept)
    fetch = tuple(sorted((*plan.fetch, *lost), key=lambda obj: obj.path))
    return replace(plan, shared=kept, fetch=fetch)
