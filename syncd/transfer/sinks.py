"""Where a reader's bytes go: a file at an offset, the hashers, the byte count.

A reader calls a sink from a worker thread (a pump thread, or the I/O pool for readers that
stream on the event loop), in this order for each response it reads: `begin` once the
headers are in and before any byte (again if a fallback reader starts over), `write` for
every buffer-full, `end` after the last byte. None of them touches the event loop: the byte
count goes through `counted`, which the engine makes thread-safe.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from syncd.core.plan import CheckPlan, ObjectFacts, Range
from syncd.core.verification import RangeHashers, Written
from syncd.local.direct import RangeWriter
from syncd.local.files import Buffer, locally, open_preallocated, write_at
from syncd.local.writeback import Writeback

__all__ = ["Decide", "RangeSink", "Sink", "WholeSink"]

Counted = Callable[[int], None]

# What a whole GET's headers make of it: the object's facts and the check they call for
# (the facts are None where the source sends none, as the MLflow proxy does not).
Decide = Callable[[ObjectFacts | None], tuple[ObjectFacts, CheckPlan]]


class Sink(Protocol):
    """What a reader hands its bytes to (blocking; called from worker threads)."""

    def begin(self, facts: ObjectFacts | None) -> int:
        """The response's headers are in: start afresh; returns how many bytes to expect."""
        ...

    def write(self, pieces: Sequence[Buffer], offset: int) -> None: ...

    def end(self) -> None: ...


class RangeSink:
    """One range of a file the engine has open, shared with the file's other ranges."""

    def __init__(
        self,
        writer: RangeWriter,
        check: CheckPlan,
        byte_range: Range,
        counted: Counted,
        writeback: Writeback,
    ) -> None:
        self._writer = writer
        self._check = check
        self.byte_range = byte_range
        self._counted = counted
        self._writeback = writeback
        self.hashers = RangeHashers(check, byte_range)

    def begin(self, facts: ObjectFacts | None) -> int:
        self.hashers = RangeHashers(self._check, self.byte_range)
        return self.byte_range.length

    def write(self, pieces: Sequence[Buffer], offset: int) -> None:
        locally(self._writer.write, pieces, offset)
        size = 0
        for piece in pieces:  # hashers release the GIL: other pumps go on meanwhile
            self.hashers.update(piece)
            size += len(piece)
        self._counted(size)

    def end(self) -> None:
        # Direct writes leave little dirty (a tail at most), so this then costs next to nothing.
        self._writeback.range_done(self._writer.fd, self.byte_range.start, self.byte_range.length)


class WholeSink:
    """A whole object into a file of its own, opened once the headers say what it is."""

    def __init__(self, dest: Path, decide: Decide, counted: Counted) -> None:
        self._dest = dest
        self._decide = decide
        self._counted = counted
        self._fd: int | None = None
        self.facts: ObjectFacts | None = None
        self.check = CheckPlan("size")
        self.hashers: RangeHashers | None = None
        self.written: Written | None = None

    def begin(self, facts: ObjectFacts | None) -> int:
        self.close()
        self.facts, self.check = self._decide(facts)
        self.hashers = RangeHashers(self.check, Range(0, self.facts.size), whole_object=True)
        self._fd = locally(open_preallocated, self._dest, self.facts.size)
        return self.facts.size

    def write(self, pieces: Sequence[Buffer], offset: int) -> None:
        assert self._fd is not None
        assert self.hashers is not None
        locally(write_at, self._fd, pieces, offset)
        size = 0
        for piece in pieces:
            self.hashers.update(piece)
            size += len(piece)
        self._counted(size)

    def end(self) -> None:
        # fstat and close here, in the reader's thread: on the event loop either would wait
        # on the disk (a close cost ~0.2 ms of the loop's time a file, for 2,000 small files:
        # `py-spy record` of `python -m tests.bench.fetch`).
        assert self._fd is not None
        stat = locally(os.fstat, self._fd)
        self.written = Written(stat.st_size, stat.st_mtime_ns)
        locally(self.close)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
