"""The whole-object hash is fed in byte order whatever order the ranges finish in."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import tempfile
from concurrent.futures import ThreadPoolExecutor

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.core.checksum import Hasher
from syncd.core.plan import Range, plan_ranges
from syncd.local.files import hash_exactly
from syncd.transfer.ordered import HashBack, OrderedHasher

DATA = os.urandom(300_000)


def hash_back(fd: int) -> HashBack:
    def hash_span(hasher: Hasher, start: int, end: int) -> None:
        hash_exactly(fd, hasher, start, end, 1 << 16)

    return hash_span


async def hash_in_order_of(data: bytes, ranges: list[Range], finish_order: list[int]) -> bytes:
    with tempfile.TemporaryFile() as handle, ThreadPoolExecutor(2) as executor:
        handle.write(data)
        handle.flush()
        ordered = OrderedHasher(
            hash_back(handle.fileno()), hashlib.md5(usedforsecurity=False), len(data), executor
        )
        runner = asyncio.create_task(ordered.run())
        for index in finish_order:
            ordered.range_done(ranges[index])
            await asyncio.sleep(0)  # let the hasher catch up (or not) between completions
        return (await asyncio.wait_for(runner, 30)).digest()


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=len(DATA)),
    preferred=st.integers(min_value=1, max_value=50_000),
    order=st.randoms(use_true_random=False),
)
def test_any_completion_order_gives_the_whole_objects_hash(
    size: int, preferred: int, order: random.Random
) -> None:
    data = DATA[:size]
    ranges = plan_ranges(size, preferred)
    finish_order = list(range(len(ranges)))
    order.shuffle(finish_order)
    digest = asyncio.run(hash_in_order_of(data, ranges, finish_order))
    assert digest == hashlib.md5(data, usedforsecurity=False).digest()


def test_it_waits_for_a_missing_range() -> None:
    ranges = plan_ranges(len(DATA), 100_000)

    async def missing_the_middle() -> None:
        with tempfile.TemporaryFile() as handle, ThreadPoolExecutor(2) as executor:
            handle.write(DATA)
            handle.flush()
            hasher = hashlib.md5(usedforsecurity=False)
            ordered = OrderedHasher(hash_back(handle.fileno()), hasher, len(DATA), executor)
            runner = asyncio.create_task(ordered.run())
            ordered.range_done(ranges[0])
            ordered.range_done(ranges[2])
            await asyncio.sleep(0.05)
            assert not runner.done()  # never hashes past a gap
            ordered.range_done(ranges[1])
            assert (await asyncio.wait_for(runner, 30)).digest() == hashlib.md5(DATA).digest()

    asyncio.run(missing_the_middle())
