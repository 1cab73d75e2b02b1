"""Hashers and the arithmetic S3 uses to turn part checksums into object checksums (pure)."""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from awscrt import checksums as crt

__all__ = [
    "Algorithm",
    "CrcHasher",
    "Hasher",
    "checksums_match",
    "combine_crcs",
    "composite_checksum",
    "encode_crc",
    "encode_digest",
    "multipart_etag",
    "new_hasher",
]


class Algorithm(StrEnum):
    """Checksum algorithms S3 reports, cheapest to verify first."""

    CRC64NVME = "crc64nvme"
    CRC32C = "crc32c"
    CRC32 = "crc32"
    SHA256 = "sha256"
    SHA1 = "sha1"
    MD5 = "md5"

    @property
    def is_crc(self) -> bool:
        return self in (Algorithm.CRC64NVME, Algorithm.CRC32C, Algorithm.CRC32)

    @property
    def s3_field(self) -> str:
        """The response field holding it: `ChecksumCRC64NVME`, `ChecksumSHA256`, ..."""
        return "Checksum" + self.name


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


_CRC_WIDTH = {Algorithm.CRC32: 4, Algorithm.CRC32C: 4, Algorithm.CRC64NVME: 8}


class CrcHasher:
    """A running CRC with a hashlib-like face; `value` is the integer S3 encodes."""

    def __init__(self, algorithm: Algorithm) -> None:
        if not algorithm.is_crc:
            raise ValueError(f"{algorithm} is not a CRC")
        self.algorithm = algorithm
        self.value = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        # zlib and awscrt release the GIL on large buffers, so this runs well in worker threads.
        if self.algorithm is Algorithm.CRC32:
            self.value = zlib.crc32(data, self.value)
        elif self.algorithm is Algorithm.CRC32C:
            self.value = crt.crc32c(
                bytes(data) if isinstance(data, bytearray) else data, self.value
            )
        else:
            self.value = crt.crc64nvme(
                bytes(data) if isinstance(data, bytearray) else data, self.value
            )

    def digest(self) -> bytes:
        return self.value.to_bytes(_CRC_WIDTH[self.algorithm], "big")


def new_hasher(algorithm: Algorithm) -> Hasher:
    """A fresh hasher for `algorithm`."""
    if algorithm.is_crc:
        return CrcHasher(algorithm)
    return hashlib.new(algorithm.value)


def combine_crcs(algorithm: Algorithm, parts: Sequence[tuple[int, int]]) -> int:
    """The CRC of the concatenation of parts given as (crc, length), in order, with no rescan."""
    combine = {
        Algorithm.CRC32: crt.combine_crc32,
        Algorithm.CRC32C: crt.combine_crc32c,
        Algorithm.CRC64NVME: crt.combine_crc64nvme,
    }[algorithm]
    if not parts:
        return 0
    value = parts[0][0]
    for crc, length in parts[1:]:
        value = combine(value, crc, length)
    return value


def encode_crc(algorithm: Algorithm, value: int) -> str:
    """A CRC as S3 writes it: base64 of the big-endian bytes."""
    return base64.b64encode(value.to_bytes(_CRC_WIDTH[algorithm], "big")).decode()


def encode_digest(algorithm: Algorithm, hasher: Hasher) -> str:
    """A whole-object digest as S3 states it: a CRC as `encode_crc`, MD5 as hex (an ETag),
    SHA as base64."""
    if isinstance(hasher, CrcHasher):
        return encode_crc(algorithm, hasher.value)
    if algorithm is Algorithm.MD5:
        return hasher.digest().hex()
    return base64.b64encode(hasher.digest()).decode()


def composite_checksum(algorithm: Algorithm, part_digests: Sequence[bytes]) -> str:
    """S3's COMPOSITE checksum: the checksum of the concatenated part checksums, then `-N`."""
    outer = new_hasher(algorithm)
    for digest in part_digests:
        outer.update(digest)
    return f"{base64.b64encode(outer.digest()).decode()}-{len(part_digests)}"


def multipart_etag(part_md5s: Sequence[bytes]) -> str:
    """A multipart upload's ETag: MD5 of the concatenated binary part MD5s, then `-N`."""
    outer = hashlib.md5(b"".join(part_md5s), usedforsecurity=False)
    return f"{outer.hexdigest()}-{len(part_md5s)}"


def checksums_match(expected: str, actual: str) -> bool:
    """Equal values; a composite `-N` suffix is ignored when the stated value lacks it (moto)."""
    if "-" in actual and "-" not in expected:
        actual = actual.split("-", 1)[0]
    return expected == actual
