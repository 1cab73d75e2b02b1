"""`syncd verify [--repair]`: re-hash run folders, record what is damaged, and repair it.

What a verify finds is recorded in the root (`local.damage`), so whoever writes the root next
repairs it: a `syncd sync`, or the daemon on any host at its next sweep. With `--repair` on a
root no daemon writes, the repair runs here (range by range, as the daemon repairs); on a root
a daemon writes, the damage is handed to it and this command waits until it is repaired.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from syncd.core.desired import DesiredModel, ModelVersionRef
from syncd.core.folder_plan import Suspicion
from syncd.core.manifest import Manifest, differences
from syncd.errors import LocalStoreError, SyncdError
from syncd.local.lock import RootLock, take_root
from syncd.local.store import LocalStore
from syncd.local.verify import RateLimiter, verify_manifest
from syncd.settings import Settings

__all__ = ["run_verify"]

EXIT_ERROR = 1


def run_verify(args: argparse.Namespace, settings: Settings, store: LocalStore) -> int:
    """Verify (and with --repair, repair) the runs named, or every run syncd manages."""
    run_ids = args.run_ids or [m.run_id for m in store.manifests_on_disk()]
    for run_id in run_ids:
        store.run_dir(run_id)  # a run id that is not 32 hex characters stops here
    limiter = RateLimiter(args.rate)
    listings: dict[str, Any] = {}
    if args.remote:
        listings = asyncio.run(_listings(settings, store, run_ids))
    damaged = _check(store, run_ids, limiter, listings, quiet=False)
    if damaged and args.repair:
        _repair(args, settings, store, sorted(damaged))
        print("after the repair:", file=sys.stderr)
        damaged = _check(store, sorted(damaged), RateLimiter(None), {}, quiet=False)
    elif damaged:
        print(
            "recorded in the root: the next `syncd sync` of these runs, or the daemon writing "
            "the root, repairs them; `syncd verify --repair` does it now",
            file=sys.stderr,
        )
    missing = [run_id for run_id in run_ids if store.read_manifest(run_id) is None]
    bad = len(set(damaged) | set(missing))
    print(f"{len(run_ids) - bad} intact, {bad} damaged", file=sys.stderr)
    return 0 if bad == 0 else EXIT_ERROR


def _check(
    store: LocalStore,
    run_ids: list[str],
    limiter: RateLimiter,
    listings: dict[str, Any],
    *,
    quiet: bool,
) -> dict[str, Suspicion]:
    """Print each run's verdict; record and return the local damage found."""
    damaged: dict[str, Suspicion] = {}
    for run_id in run_ids:
        manifest = store.read_manifest(run_id)
        if manifest is None:
            print(f"{run_id}  NO MANIFEST (not created by syncd, or never completed)")
            continue
        problems = verify_manifest(store.run_dir(run_id), manifest, limiter)
        described = [p.describe() for p in problems]
        if run_id in listings:
            described += [
                f"{path} (source changed)" for path in differences(manifest, listings[run_id])
            ]
        if problems:
            found = {p.path: p.spans or None for p in problems}
            damaged[run_id] = found
            _record(store, run_id, found)
        if described:
            print(f"{run_id}  DAMAGED: {', '.join(described)}")
        elif not quiet:
            unverified = len(manifest.unverified)
            note = f", {unverified} size-only" if unverified else ""
            print(f"{run_id}  OK  {len(manifest.files)} files, {manifest.total_bytes} bytes{note}")
    return damaged


def _record(store: LocalStore, run_id: str, found: Suspicion) -> None:
    try:
        store.real_dir(store.damage.folder)
        store.damage.record(run_id, found)
    except OSError as exc:
        print(
            f"{run_id}: cannot record the damage under {store.meta} ({exc.strerror}): "
            "re-run as a user who can write the dataset",
            file=sys.stderr,
        )


def _repair(
    args: argparse.Namespace, settings: Settings, store: LocalStore, runs: list[str]
) -> None:
    lock = RootLock(store.root)
    if take_root(store, lock, "syncd verify --repair"):
        try:
            asyncio.run(_repair_here(settings, store, runs))
        finally:
            lock.release()
        return
    holder = lock.holder()
    print(
        f"{store.root} is written by {holder}: handed the damage to it; waiting up to "
        f"{args.wait:.0f}s for it to repair (Ctrl-C stops waiting, not the repair; "
        "`syncd verify` later shows the result)",
        file=sys.stderr,
    )
    deadline = time.monotonic() + args.wait
    while any(store.damage.has(run_id) for run_id in runs):
        if time.monotonic() > deadline:
            raise SyncdError(
                f"{holder} has not repaired {', '.join(r for r in runs if store.damage.has(r))} "
                f"within {args.wait:.0f}s; its status page or log says why"
            )
        time.sleep(0.5)


async def _repair_here(settings: Settings, store: LocalStore, runs: list[str]) -> None:
    from syncd.app.runtime import open_runtime

    async with open_runtime(settings) as runtime:
        for run_id in runs:
            manifest = store.read_manifest(run_id)
            if manifest is None:
                continue
            target, desired = _desired_from(manifest)
            outcome = await runtime.syncer.ensure(store, target, desired)
            print(
                f"{run_id}  repaired: {outcome.downloaded_files} file(s), "
                f"{outcome.downloaded_bytes} bytes fetched",
                file=sys.stderr,
            )
    if any(store.damage.has(run_id) for run_id in runs):
        raise LocalStoreError("the repair left damage recorded; run `syncd verify` again")


def _desired_from(manifest: Manifest) -> tuple[str, DesiredModel]:
    """The run as its manifest knows it: same source, same pointer (no registry needed)."""
    if manifest.wanted_by:
        wanted = manifest.wanted_by[-1]
        ref = ModelVersionRef(wanted.model, wanted.version, wanted.selector)
        target = wanted.target
    else:
        ref = ModelVersionRef("?", "?", "repair")
        target = "cli"
    return target, DesiredModel(ref, manifest.run_id, "model_context", manifest.source_uri)


async def _listings(settings: Settings, store: LocalStore, run_ids: list[str]) -> dict[str, Any]:
    from syncd.remote.source import Sources

    found = {}
    async with Sources.open(settings) as sources:
        for run_id in run_ids:
            manifest = store.read_manifest(run_id)
            if manifest is not None:
                found[run_id] = await sources.list_objects(sources.locate(manifest.source_uri))
    return found
