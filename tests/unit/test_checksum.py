import base64
import hashlib
import itertools
import zlib

from awscrt import checksums as crt
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.core.checksum import (
    Algorithm,
    CrcHasher,
    combine_crcs,
    composite_checksum,
    encode_crc,
    multipart_etag,
    new_hasher,
)

WHOLE = {
    Algorithm.CRC32: lambda data: zlib.crc32(data),
    Algorithm.CRC32C: lambda data: crt.crc32c(data),
    Algorithm.CRC64NVME: lambda data: crt.crc64nvme(data),
}


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=4096),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=8),
    algorithm=st.sampled_from([Algorithm.CRC32, Algorithm.CRC32C, Algorithm.CRC64NVME]),
)
def test_combined_part_crcs_equal_the_whole_crc(
    data: bytes, cuts: list[int], algorithm: Algorithm
) -> None:
    parts = []
    for piece in split(data, cuts):
        hasher = CrcHasher(algorithm)
        hasher.update(piece)
        parts.append((hasher.value, len(piece)))
    assert combine_crcs(algorithm, parts) == WHOLE[algorithm](data)


def test_streaming_crc_equals_one_shot() -> None:
    data = bytes(range(256)) * 1000
    for algorithm, whole in WHOLE.items():
        hasher = CrcHasher(algorithm)
        for start in range(0, len(data), 777):
            hasher.update(bytearray(data[start : start + 777]))
        assert hasher.value == whole(data)


def test_encode_crc_matches_s3_form() -> None:
    # S3 writes the big-endian bytes in base64: crc32(b"hello") is 0x3610a686.
    assert encode_crc(Algorithm.CRC32, zlib.crc32(b"hello")) == "NhCmhg=="
    assert len(base64.b64decode(encode_crc(Algorithm.CRC64NVME, 1))) == 8


def test_multipart_etag_matches_s3_rule() -> None:
    parts = [b"a" * 10, b"b" * 10, b"c" * 3]
    digests = [hashlib.md5(part).digest() for part in parts]
    expected = hashlib.md5(b"".join(digests)).hexdigest() + "-3"
    assert multipart_etag(digests) == expected


def test_composite_checksum_is_checksum_of_part_checksums() -> None:
    parts = [b"x" * 100, b"y" * 50]
    digests = [zlib.crc32(part).to_bytes(4, "big") for part in parts]
    value = composite_checksum(Algorithm.CRC32, digests)
    assert value == encode_crc(Algorithm.CRC32, zlib.crc32(b"".join(digests))) + "-2"


def test_new_hasher_kinds() -> None:
    sha = new_hasher(Algorithm.SHA256)
    sha.update(b"abc")
    assert sha.digest() == hashlib.sha256(b"abc").digest()
    crc = new_hasher(Algorithm.CRC32C)
    crc.update(b"abc")
    assert crc.digest() == crt.crc32c(b"abc").to_bytes(4, "big")
