"""Pure planning: which check an object gets, how it is cut into ranges."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from syncd.core.checksum import Algorithm
from syncd.errors import quoted

__all__ = [
    "CheckPlan",
    "ObjectFacts",
    "Range",
    "choose_check",
    "is_md5_etag",
    "plan_ranges",
    "unquote_etag",
]

_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-(\d+)$")

Method = Literal["full-crc", "composite", "crc-parts", "multipart-etag", "whole", "size"]


def is_md5_etag(etag: str) -> bool:
    """An ETag that is the object's MD5 (S3 and S3-compatible servers, single-part uploads)."""
    return bool(_MD5_HEX.match(etag))


def unquote_etag(etag: str) -> str:
    """ETags arrive quoted from S3 and unquoted from some servers (rclone); keep them bare."""
    return etag.strip().strip('"').lower()


@dataclass(frozen=True)
class ObjectFacts:
    """What the store says about one object (a HEAD, or a whole GET's headers).

    `etag` is the version token every read of it is pinned to: S3's and Azure's ETag, GCS's
    generation. `checksums` are in S3's encoding whatever the store (CRCs and SHAs base64,
    MD5 hex)."""

    size: int
    etag: str
    parts_count: int | None = None
    first_part_size: int | None = None
    checksums: Mapping[Algorithm, str] = field(default_factory=dict)
    checksum_type: str | None = None  # FULL_OBJECT or COMPOSITE, where the server says
    server_side_encryption: str | None = None
    unchecked_because: str = ""  # the store's words for why it states no checksum


@dataclass(frozen=True)
class CheckPlan:
    """How one object will be verified.

    method:
      full-crc        a full-object CRC, computed per range and combined (ranges may be anything)
      composite       a COMPOSITE checksum over the upload parts (ranges must be those parts)
      crc-parts       a multipart object's CRC of unstated type: CRCs per upload part give both
                      the full-object and the composite value, and one must match
      multipart-etag  MD5 per upload part, combined like S3 (ranges must be those parts)
      whole           one hash over the whole object, fed in order alongside the download
      size            nothing but the size can be checked; `note` says why
    """

    method: Method
    algorithm: Algorithm | None = None
    expected: str | None = None
    note: str = ""

    @property
    def needs_aligned_parts(self) -> bool:
        return self.method in ("composite", "crc-parts", "multipart-etag")

    @property
    def label(self) -> str:
        """What the manifest records as the check done, e.g. `crc64nvme`, `md5-multipart`."""
        if self.method == "size":
            return "size"
        assert self.algorithm is not None
        suffix = {"composite": "-composite", "multipart-etag": "-multipart"}.get(self.method, "")
        if self.method == "crc-parts":
            suffix = "-parts"
        return self.algorithm.value + suffix


def choose_check(facts: ObjectFacts, mode: Literal["checksum", "size"]) -> CheckPlan:
    """The cheapest check that still covers every byte, or `size` with the reason none exists."""
    if mode == "size":
        return CheckPlan("size", note="verification set to size only (s3.verify: size)")
    # Uploaded in parts (a multipart upload), one part included: boto3 sends a file of exactly
    # its threshold as a one-part upload, whose checksums are per part like any other.
    multipart = facts.parts_count is not None and facts.parts_count >= 1
    for algorithm in (Algorithm.CRC64NVME, Algorithm.CRC32C, Algorithm.CRC32):
        value = facts.checksums.get(algorithm)
        if value is None:
            continue
        aligned = multipart and bool(facts.first_part_size)
        if "-" in value or facts.checksum_type == "COMPOSITE":
            if aligned:
                return CheckPlan("composite", algorithm, value)
            continue
        if facts.checksum_type == "FULL_OBJECT" or not multipart:
            return CheckPlan("full-crc", algorithm, value)
        if aligned:
            # Real S3 marks composite values with -N and states the type; some servers
            # (moto) do neither, so accept whichever of the two the parts reproduce.
            return CheckPlan("crc-parts", algorithm, value)
    for algorithm in (Algorithm.SHA256, Algorithm.SHA1, Algorithm.MD5):
        value = facts.checksums.get(algorithm)
        if value is None:
            continue
        if multipart:
            # S3 has no FULL_OBJECT SHA for multipart uploads: it is composite, marked -N or not.
            if facts.first_part_size:
                return CheckPlan("composite", algorithm, value)
            continue
        return CheckPlan("whole", algorithm, value)
    etag = unquote_etag(facts.etag)
    if facts.server_side_encryption in ("aws:kms", "aws:kms:dsse"):
        return CheckPlan(
            "size", note="SSE-KMS object: its ETag is not an MD5 and it has no checksum"
        )
    if facts.unchecked_because:
        return CheckPlan("size", note=facts.unchecked_because)
    match = _MULTIPART_ETAG.match(etag)
    if match and multipart and facts.first_part_size and int(match.group(1)) == facts.parts_count:
        return CheckPlan("multipart-etag", Algorithm.MD5, etag)
    if _MD5_HEX.match(etag):
        return CheckPlan("whole", Algorithm.MD5, etag)
    return CheckPlan(
        "size", note=f"ETag {quoted(etag)} is not an MD5 and the object has no checksum"
    )


@dataclass(frozen=True, order=True)
class Range:
    """Bytes [start, end) of an object.

    `part_length` is set when the range covers several whole upload parts of that length (the
    last may be shorter): a per-part check then hashes each part of it on its own.
    """

    start: int
    end: int
    part_length: int = 0

    @property
    def length(self) -> int:
        return self.end - self.start

    def part_ends(self) -> list[int]:
        """Where each upload part inside the range ends (just `end` for a single part)."""
        if not self.part_length:
            return [self.end]
        return [*range(self.start + self.part_length, self.end, self.part_length), self.end]

    @property
    def header(self) -> str:
        """The HTTP Range header value (inclusive end)."""
        return f"bytes={self.start}-{self.end - 1}"


def plan_ranges(
    size: int,
    preferred: int,
    *,
    upload_part_size: int | None = None,
    aligned: bool = False,
) -> list[Range]:
    """Cut an object into ranged GETs.

    With `aligned`, ranges are whole upload parts, as many as fit in `preferred` (at least
    one): a per-part hash needs all of a part and nothing else, and fewer, larger GETs cost
    less per byte. Otherwise ranges follow upload parts where they are known, cut further
    where a part is larger than `preferred`, so that retries and resumes redo little.
    Uploaders write equal parts but the last (boto3, the AWS CLI, MLflow all do); a layout
    that breaks this shows up as a checksum mismatch, never as wrong bytes published.
    """
    if size < 0 or preferred <= 0:
        raise ValueError("size must be >= 0 and preferred > 0")
    if size == 0:
        return []
    if aligned and not upload_part_size:
        raise ValueError("aligned ranges need the upload part size")
    part_size = upload_part_size or size
    if aligned:
        per_range = max(1, preferred // part_size)
        span = per_range * part_size
        return [
            Range(
                start,
                min(start + span, size),
                part_size if min(start + span, size) - start > part_size else 0,
            )
            for start in range(0, size, span)
        ]
    ranges: list[Range] = []
    part_start = 0
    while part_start < size:
        part_end = min(part_start + part_size, size)
        start = part_start
        while start < part_end:
            end = min(start + preferred, part_end)
            ranges.append(Range(start, end))
            start = end
        part_start = part_end
    return ranges
