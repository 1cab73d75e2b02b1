"""Deep verification: re-hash published files against what their manifest says was verified."""

from __future__ import annotations

import base64
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
from syncd.core.manifest import FileEntry, Manifest

__all__ = ["FileProblem", "RateLimiter", "verify_entry", "verify_manifest"]

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
        size = path.stat().st_size
    except OSError:
        return FileProblem(entry.path, "missing")
    if size != entry.size:
        return FileProblem(entry.path, "size")
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
