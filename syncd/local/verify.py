"""Deep verification: re-hash published files against what their manifest says was verified."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from syncd.core.checksum import (
    Algorithm,
    CrcHasher,
    Hasher,
    checksums_match,
    composite_checksum,
    encode_digest,
    multipart_etag,
    new_hasher,
)
from syncd.core.manifest import FileEntry, Manifest, Span
from syncd.local.inside import InsideFolder
from syncd.local.spans import hash_span

__all__ = ["FileProblem", "RateLimiter", "damaged_spans", "verify_entry", "verify_manifest"]

_BLOCK = 8 << 20


class RateLimiter:
    """Keeps a reader under `bytes_per_second` so endpoints keep their disk bandwidth."""

    def __init__(
        self,
        bytes_per_second: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate = bytes_per_second
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._consumed = 0

    def consume(self, count: int) -> None:
        if not self._rate:
            return
        self._consumed += count
        ahead = self._consumed / self._rate - (self._clock() - self._start)
        if ahead > 0:
            self._sleep(ahead)


@dataclass(frozen=True)
class FileProblem:
    """A file that no longer matches its manifest entry."""

    path: str
    reason: str  # missing, size, checksum
    spans: tuple[Span, ...] = ()  # the damaged ranges, where the manifest recorded ranges

    def describe(self) -> str:
        """`model.safetensors (checksum: bytes 0-16777215, 1 of 4 ranges)` and the like."""
        if not self.spans:
            return f"{self.path} ({self.reason})"
        where = ", ".join(f"bytes {span.start}-{span.end - 1}" for span in self.spans[:3])
        more = f" and {len(self.spans) - 3} more" if len(self.spans) > 3 else ""
        return f"{self.path} ({self.reason}: {where}{more})"


def damaged_spans(path: Path, entry: FileEntry, limiter: RateLimiter) -> tuple[Span, ...]:
    """The recorded ranges of `entry` whose bytes in `path` no longer hash as recorded."""
    damaged = []
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        for span in entry.spans():
            hasher = CrcHasher(Algorithm.CRC32C)
            reached = hash_span(fd, hasher, span.start, span.end, _BLOCK, limiter.consume)
            if reached < span.end or hasher.value != span.crc32c:
                damaged.append(span)  # short: this range and the rest are damaged
    finally:
        os.close(fd)
    return tuple(damaged)


def _hash_parts(
    path: Path, algorithm: Algorithm, part_size: int, limiter: RateLimiter
) -> list[Hasher]:
    """One hasher per `part_size` bytes of the file, the last part shorter."""
    parts: list[Hasher] = []
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        for start in range(0, size, part_size):
            hasher = new_hasher(algorithm)
            hash_span(fd, hasher, start, min(start + part_size, size), _BLOCK, limiter.consume)
            parts.append(hasher)
    finally:
        os.close(fd)
    return parts


def _computed(path: Path, entry: FileEntry, limiter: RateLimiter) -> str | None:
    """The value `entry.checksum` should equal, recomputed from the file; None if no check."""
    label = entry.verified_by
    if entry.checksum is None:
        return None
    if label == "size":
        # Proxied sources: nothing to check against at download, the MD5 was recorded then.
        label = "md5"
    name, _, kind = label.partition("-")
    algorithm = Algorithm(name)
    if kind in ("composite", "multipart"):
        if not entry.part_size:
            return None
        parts = _hash_parts(path, algorithm, entry.part_size, limiter)
        digests = [part.digest() for part in parts]
        return (
            multipart_etag(digests)
            if kind == "multipart"
            else composite_checksum(algorithm, digests)
        )
    (whole,) = _hash_parts(path, algorithm, max(entry.size, 1), limiter) or [new_hasher(algorithm)]
    return encode_digest(algorithm, whole)


def verify_entry(
    folder: Path | InsideFolder, entry: FileEntry, limiter: RateLimiter
) -> FileProblem | None:
    """Re-hash one file; the problem found, or None when it still matches."""
    inside = folder if isinstance(folder, InsideFolder) else InsideFolder(folder)
    facts = inside.lstat(entry.path)
    if facts is None or not stat.S_ISREG(facts.st_mode):
        # Gone, or a symlink or folder in its place (or on its way): never read through.
        return FileProblem(entry.path, "missing")
    path = inside.folder / entry.path
    size = facts.st_size
    if size != entry.size:
        return FileProblem(entry.path, "size")
    if entry.range_crc32c:
        # The range CRCs were taken from the bytes that passed the source's check: they locate
        # damage to a range, and hash ~15x faster than the MD5 most sources offer
        # (`python -m tests.bench.micro`).
        spans = damaged_spans(path, entry, limiter)
        return FileProblem(entry.path, "checksum", spans) if spans else None
    computed = _computed(path, entry, limiter)
    if (
        computed is not None
        and entry.checksum is not None
        and not checksums_match(entry.checksum, computed)
    ):
        return FileProblem(entry.path, "checksum")
    return None


def verify_manifest(folder: Path, manifest: Manifest, limiter: RateLimiter) -> list[FileProblem]:
    """Every file of a run folder re-hashed, in manifest order."""
    problems = []
    inside = InsideFolder(folder)
    for entry in manifest.files:
        problem = verify_entry(inside, entry, limiter)
        if problem is not None:
            problems.append(problem)
    return problems
