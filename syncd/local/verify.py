"""Deep verification: re-hash published files against what their manifest says was verified."""

from __future__ import annotations

import base64
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
    encode_crc,
    multipart_etag,
    new_hasher,
)
from syncd.core.manifest import FileEntry, Manifest, Span

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
        buffer = bytearray(min(_BLOCK, max(entry.size, 1)))
        view = memoryview(buffer)
        for span in entry.spans():
            hasher = CrcHasher(Algorithm.CRC32C)
            position = span.start
            while position < span.end:
                count = os.preadv(fd, [view[: min(len(buffer), span.end - position)]], position)
                if not count:
                    break  # shorter than recorded: this range and the rest are damaged
                hasher.update(view[:count])
                limiter.consume(count)
                position += count
            if position < span.end or hasher.value != span.crc32c:
                damaged.append(span)
    finally:
        os.close(fd)
    return tuple(damaged)


def _hash_parts(
    path: Path, algorithm: Algorithm, part_size: int, limiter: RateLimiter
) -> list[Hasher]:
    parts: list[Hasher] = []
    with path.open("rb") as handle:
        while True:
            hasher = new_hasher(algorithm)
            remaining = part_size
            while remaining:
                data = handle.read(min(_BLOCK, remaining))
                if not data:
                    break
                hasher.update(data)
                limiter.consume(len(data))
                remaining -= len(data)
            if remaining == part_size:
                break
            parts.append(hasher)
            if remaining:
                break
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
    if isinstance(whole, CrcHasher):
        return encode_crc(algorithm, whole.value)
    if algorithm is Algorithm.MD5:
        return whole.digest().hex()
    return base64.b64encode(whole.digest()).decode()


def verify_entry(folder: Path, entry: FileEntry, limiter: RateLimiter) -> FileProblem | None:
    """Re-hash one file; the problem found, or None when it still matches."""
    path = folder / entry.path
    try:
        facts = path.lstat()
    except OSError:
        return FileProblem(entry.path, "missing")
    if not stat.S_ISREG(facts.st_mode):
        return FileProblem(entry.path, "missing")  # a symlink or folder in its place
    size = facts.st_size
    if size != entry.size:
        return FileProblem(entry.path, "size")
    if entry.range_crc32c:
        # The range CRCs were taken from the bytes that passed the source's check: they locate
        # damage to a range, and hash ~15x faster than the MD5 most sources offer.
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
    for entry in manifest.files:
        problem = verify_entry(folder, entry, limiter)
        if problem is not None:
            problems.append(problem)
    return problems
