"""The engine's file and object steps that hold no state of its own: opening a file's
writer through a cancellation, re-hashing a range already on disk, the HEAD of an object."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace

from syncd.core.completion import to_completion
from syncd.core.manifest import RemoteObject
from syncd.core.plan import CheckPlan, ObjectFacts, Range
from syncd.core.verification import RangeHashers, check_same_object
from syncd.local.direct import RangeWriter
from syncd.local.files import hash_exactly
from syncd.remote.retry import RetryPolicy
from syncd.remote.s3 import S3Location
from syncd.transfer.readers import S3Reading

__all__ = ["head_object", "open_writer", "rehash"]


async def open_writer(direct: bool, opener: Callable[..., int], *args: object) -> RangeWriter:
    """The file `opener` opens (and preallocates) in a worker thread, in the writer its
    ranges share (direct where the settings and the filesystem allow: syncd.local.direct).
    Cancelled meanwhile, it waits for the thread (which cannot be stopped) and closes what it
    opened: never a leaked descriptor, never a file still being made after the download gave
    up."""
    future = asyncio.ensure_future(asyncio.to_thread(RangeWriter.open, direct, opener, *args))
    try:
        return await to_completion(future)
    except asyncio.CancelledError:
        if future.done() and not future.cancelled() and future.exception() is None:
            future.result().close()
        raise


async def rehash(io: Executor, fd: int, byte_range: Range, check: CheckPlan) -> RangeHashers:
    """The hashers of a range already on disk (a resumed build), fed from the file."""
    hashers = RangeHashers(check, byte_range)
    await to_completion(
        asyncio.get_running_loop().run_in_executor(
            io, hash_exactly, fd, hashers, byte_range.start, byte_range.end, 4 << 20
        )
    )
    return hashers


async def head_object(
    retry: RetryPolicy, store: S3Reading, location: S3Location, obj: RemoteObject
) -> ObjectFacts:
    """The object's facts by HEAD, checked to be the object listed, with its part layout
    (a HEAD of part 1) where it was uploaded in parts."""
    facts = await retry.run(f"HEAD {location.uri}", lambda: store.head(location))
    check_same_object(location.uri, obj, facts)
    if "-" in facts.etag or any("-" in value for value in facts.checksums.values()):
        first = await retry.run(
            f"HEAD part 1 of {location.uri}", lambda: store.head(location, part_number=1)
        )
        if first.parts_count:  # one part counts: its checksums are per part too
            facts = replace(facts, parts_count=first.parts_count, first_part_size=first.size)
    return facts
