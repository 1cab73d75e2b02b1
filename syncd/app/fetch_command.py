"""`syncd fetch URI DEST [URI DEST ...]`: KServe's storage-initializer contract.

KServe runs a `ClusterStorageContainer`'s image with positional `SOURCE_URI DEST_PATH` pairs
and the store credentials of the service account's secret in the environment; exit 0 is
success, anything else becomes `ModelLoadFailed` with the log's tail as the message (kserve
`pkg/webhook/admission/pod/storage_initializer_injector.go`). Each `models:/` URI is resolved
by the same rules as `syncd sync` (the version's parent run); a store URI (`gs://`,
`wasbs://`, `abfss://`, `s3://`, as KServe's own initializer takes them) names the files
itself. Either way they are downloaded by the same engine, verified by the same checks,
straight into DEST.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path

from syncd.core.desired import DesiredModel, ModelVersionRef, Registry
from syncd.core.model_uri import ModelUri, parse_model_uri
from syncd.errors import LocalStoreError, SyncdError, UsageError
from syncd.local.flat import drop_others, flat_store
from syncd.local.lock import RootLock, take_root
from syncd.local.store import LocalStore
from syncd.settings import Settings

__all__ = ["pairs", "run_fetch"]

_LOCK_WAIT = 600.0  # a second init container on the same node-local folder finishes first


Source = ModelUri | str  # a registry pointer, or a store URI


def pairs(arguments: list[str]) -> list[tuple[Source, Path]]:
    """`URI DEST` pairs from argv, each URI parsed and each DEST named once."""
    if not arguments or len(arguments) % 2:
        raise UsageError(
            "takes SOURCE_URI DEST_PATH pairs "
            f"(got {len(arguments)} argument{'s' if len(arguments) != 1 else ''})"
        )
    try:
        found = [
            (_source(uri), Path(dest))
            for uri, dest in zip(arguments[::2], arguments[1::2], strict=True)
        ]
    except SyncdError as exc:
        raise UsageError(str(exc)) from exc
    dests = [dest.resolve() for _, dest in found]
    if Path("/") in dests:
        raise UsageError("refusing DEST_PATH /: give the folder the model server reads")
    if len(set(dests)) != len(dests):
        raise UsageError("each DEST_PATH may receive one model only")
    return found


def run_fetch(settings: Settings, arguments: list[str], artifact_path: str) -> int:
    """Fetch every pair in turn; the first failure ends the command (exit 1, one line)."""
    from syncd.app.runtime import require_registry

    wanted = pairs(arguments)
    if any(isinstance(uri, ModelUri) for uri, _ in wanted):
        require_registry(settings)
    return asyncio.run(_fetch_all(settings, wanted, artifact_path))


def _source(uri: str) -> Source:
    """A `models:/` URI parsed, or a store URI its store can read (SourceError if none)."""
    if uri.startswith("models:/"):
        return parse_model_uri(uri)
    from syncd.remote.stores import module_for

    module_for(uri).parse(uri)
    return uri.rstrip("/")


def _of_store(uri: str) -> DesiredModel:
    """A store URI as a desired model: no version, and a folder key made from the URI (a
    fetch destination keeps one model: the key only tells its manifest which source it holds)."""
    key = hashlib.sha256(uri.encode()).hexdigest()[:32]
    return DesiredModel(ModelVersionRef(uri, "", f"uri {uri}"), key, "uri", uri)


async def _fetch_all(
    settings: Settings, wanted: list[tuple[Source, Path]], artifact_path: str
) -> int:
    from syncd.app.runtime import open_runtime

    async with open_runtime(settings) as runtime:
        for uri, dest in wanted:
            if isinstance(uri, str):
                desired = _of_store(uri)
            else:
                desired = await _resolve(runtime.registry, uri, artifact_path)
            store = flat_store(dest)
            await asyncio.to_thread(store.prepare)
            lock = await _lock(store)
            try:
                outcome = await runtime.syncer.ensure(store, "fetch", desired)
                removed = await asyncio.to_thread(drop_others, store, outcome.manifest)
            finally:
                lock.release()
            checks = sorted({entry.verified_by for entry in outcome.manifest.files})
            if outcome.result == "noop":
                print(
                    f"{dest}: {len(outcome.manifest.files)} files of {uri} already in place "
                    "and verified; nothing downloaded",
                    file=sys.stderr,
                )
                continue
            print(
                f"{dest}: {len(outcome.manifest.files)} files of {uri} in place "
                f"({outcome.downloaded_files} downloaded, {outcome.reused_files} kept"
                f"{outcome.reused_said}"
                + (f", {len(removed)} of another version removed" if removed else "")
                + f"; verified by {', '.join(checks)})",
                file=sys.stderr,
            )
    return 0


async def _resolve(registry: Registry, uri: ModelUri, artifact_path: str) -> DesiredModel:
    if uri.kind == "alias":
        ref = await registry.alias_ref(uri.name, uri.value)
    elif uri.kind == "stage":
        ref = await registry.stage_ref(uri.name, uri.value)
    else:
        ref = await registry.version_ref(uri.name, uri.value)
    desired = await registry.resolve(ref, artifact_path)
    print(
        f"{uri} -> v{ref.version} -> run {desired.run_id} from {desired.source_uri}",
        file=sys.stderr,
    )
    return desired


async def _lock(store: LocalStore) -> RootLock:
    lock = RootLock(store.root)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _LOCK_WAIT
    while not await asyncio.to_thread(take_root, store, lock, "syncd fetch"):
        if loop.time() > deadline:
            raise LocalStoreError(f"{store.root} is being written by {lock.holder()}")
        await asyncio.sleep(1.0)
    return lock
