"""What a download's bytes are checked against, and the manifest entry they earn (pure).

The engine feeds bytes to the hashers built here and hands back what they computed;
everything about which hasher a range feeds, what values the bytes give for the check S3
calls for, and whether they match lives in this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from syncd.core.checksum import (
    Algorithm,
    CrcHasher,
    Hasher,
    checksums_match,
    combine_crcs,
    composite_checksum,
    encode_crc,
    encode_digest,
    multipart_etag,
    new_hasher,
)
from syncd.core.manifest import FileEntry, RemoteObject
from syncd.core.plan import CheckPlan, ObjectFacts, Range
from syncd.errors import ChecksumMismatchError, ObjectChangedError

__all__ = [
    "Candidates",
    "PartHashers",
    "RangeHashers",
    "Written",
    "candidates",
    "check_same_object",
    "verified_entry",
]

Candidates = dict[str, str]  # the check's label -> what the bytes give for it


@dataclass(frozen=True)
class Written:
    """The file the bytes made, as fstat saw it before close."""

    size: int
    mtime_ns: int


class PartHashers:
    """One hasher per upload part of a range that covers several, fed in byte order."""

    def __init__(self, byte_range: Range, factory: Callable[[], Hasher]) -> None:
        self.parts = [(end, factory()) for end in byte_range.part_ends()]
        self._starts = [byte_range.start, *(end for end, _ in self.parts[:-1])]
        self._position = byte_range.start
        self._index = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        view = memoryview(data)
        while len(view):
            end, hasher = self.parts[self._index]
            take = min(len(view), end - self._position)
            hasher.update(view[:take])
            self._position += take
            view = view[take:]
            if self._position == end and self._index + 1 < len(self.parts):
                self._index += 1

    def digest(self) -> bytes:
        raise TypeError("a range of several parts has one digest per part")

    def lengths(self) -> list[tuple[int, Hasher]]:
        return [(end - start, h) for start, (end, h) in zip(self._starts, self.parts, strict=True)]


class RangeHashers:
    """What one range's bytes feed: the check's own hasher, if it hashes per range, and the
    CRC32C the manifest keeps so that a later repair finds and re-fetches only this range."""

    def __init__(self, check: CheckPlan, byte_range: Range, whole_object: bool = False) -> None:
        self.byte_range = byte_range
        # A whole GET feeds the check's hasher itself, whatever the method; the ranges of a
        # ranged download feed what `_range_hasher` says.
        if whole_object:
            self.check = new_hasher(check.algorithm) if check.algorithm else None
        else:
            self.check = _range_hasher(check, byte_range)
        self.crc32c = CrcHasher(Algorithm.CRC32C)

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        if self.check is not None:
            self.check.update(data)
        self.crc32c.update(data)  # 13-16 GB/s (awscrt): free next to the network

    def digest(self) -> bytes:
        return self.crc32c.digest()

    def parts(self) -> list[tuple[int, Hasher | None]]:
        """(length, hasher) of each upload part this range's check hashed."""
        if isinstance(self.check, PartHashers):
            return list(self.check.lengths())
        return [(self.byte_range.length, self.check)]


def _range_hasher(check: CheckPlan, byte_range: Range) -> Hasher | None:
    """The hasher a range feeds for this check (None: nothing per range)."""
    algorithm = check.algorithm
    if algorithm is None or check.method in ("size", "whole"):
        return None  # `whole`: an ordered hasher follows the ranges on disk instead
    if check.method == "full-crc":
        return CrcHasher(algorithm)  # any cut combines into the object's CRC
    if byte_range.part_length:
        return PartHashers(byte_range, lambda: new_hasher(algorithm))
    return new_hasher(algorithm)


def check_same_object(uri: str, obj: RemoteObject, facts: ObjectFacts) -> None:
    """The object answering now must be the one listed: the manifest records the listing."""
    if (obj.etag is not None and facts.etag != obj.etag) or facts.size != obj.size:
        raise ObjectChangedError(uri, obj.etag or "")


def candidates(
    check: CheckPlan, parts: Sequence[tuple[int, Hasher | None]], whole: Hasher | None
) -> Candidates:
    """What the downloaded bytes give for the value S3 states, keyed by the check's label.

    `parts`: (length, hasher) per upload part (per range where parts do not matter), in
    order; `whole`: the whole-object hasher, for the `whole` method."""
    if check.method == "size":
        return {}
    algorithm = check.algorithm
    assert algorithm is not None
    if check.method == "whole":
        assert whole is not None
        return {check.label: encode_digest(algorithm, whole)}
    digests = [hasher.digest() for _, hasher in parts if hasher is not None]
    if check.method == "multipart-etag":
        return {check.label: multipart_etag(digests)}
    found = {}
    if check.method in ("full-crc", "crc-parts"):
        crcs = []
        for length, hasher in parts:
            assert isinstance(hasher, CrcHasher)
            crcs.append((hasher.value, length))
        found[algorithm.value] = encode_crc(algorithm, combine_crcs(algorithm, crcs))
    if check.method in ("composite", "crc-parts"):
        found[f"{algorithm.value}-composite"] = composite_checksum(algorithm, digests)
    return found


def verified_entry(
    obj: RemoteObject,
    facts: ObjectFacts,
    check: CheckPlan,
    found: Candidates,
    written: Written,
    range_crc32c: tuple[tuple[int, int], ...] = (),
) -> FileEntry:
    """The manifest entry for bytes that passed `check`; ChecksumMismatchError otherwise."""
    if written.size != facts.size or written.size != obj.size:
        raise ChecksumMismatchError(obj.path, "size", str(obj.size), str(written.size))
    verified_by = check.label
    if check.method != "size":
        assert check.expected is not None
        matched = [
            label for label, value in found.items() if checksums_match(check.expected, value)
        ]
        if not matched:
            raise ChecksumMismatchError(
                obj.path, check.label, check.expected, " or ".join(found.values())
            )
        verified_by = matched[0]
    return FileEntry(
        path=obj.path,
        size=facts.size,
        etag=facts.etag,
        verified_by=verified_by,
        checksum=check.expected,
        part_size=facts.first_part_size,
        note=check.note,
        verified_at=time.time(),
        mtime_ns=written.mtime_ns,
        range_crc32c=range_crc32c,
    )
