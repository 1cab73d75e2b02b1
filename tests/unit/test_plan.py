import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.core.checksum import Algorithm
from syncd.core.plan import ObjectFacts, choose_check, plan_ranges, unquote_etag

MD5 = "5d41402abc4b2a76b9719d911017c592"


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=10**9),
    preferred=st.integers(min_value=1, max_value=10**8),
    upload_part=st.one_of(st.none(), st.integers(min_value=1, max_value=10**8)),
    aligned=st.booleans(),
)
def test_ranges_cover_the_object_without_gap_or_overlap(
    size: int, preferred: int, upload_part: int | None, aligned: bool
) -> None:
    if aligned and upload_part is None:
        aligned = False
    if size // min(preferred, upload_part or preferred) > 20000:
        return  # keep examples cheap
    ranges = plan_ranges(size, preferred, upload_part_size=upload_part, aligned=aligned)
    position = 0
    for byte_range in ranges:
        assert byte_range.start == position
        assert byte_range.length > 0
        position = byte_range.end
    assert position == size
    if upload_part and not aligned:
        for byte_range in ranges:
            # no range straddles an upload part boundary
            assert byte_range.start // upload_part == (byte_range.end - 1) // upload_part
    if aligned and upload_part:
        # whole parts, as many as `preferred` holds (at least one), each part's end listed
        per_range = max(1, preferred // upload_part)
        for byte_range in ranges:
            assert byte_range.start % upload_part == 0
            assert byte_range.length == per_range * upload_part or byte_range.end == size
            ends = byte_range.part_ends()
            assert ends[-1] == byte_range.end
            assert all(end % upload_part == 0 for end in ends[:-1])
            starts = [byte_range.start, *ends[:-1]]
            lengths = [end - start for start, end in zip(starts, ends, strict=True)]
            assert all(0 < length <= upload_part for length in lengths)
    elif ranges:
        assert max(r.length for r in ranges) <= preferred


def test_range_header_is_inclusive() -> None:
    first = plan_ranges(10, 4)[0]
    assert first.header == "bytes=0-3"


def test_aligned_needs_part_size() -> None:
    with pytest.raises(ValueError, match="upload part size"):
        plan_ranges(10, 4, aligned=True)


def test_quoted_and_bare_etags_compare_equal() -> None:
    assert unquote_etag(f'"{MD5.upper()}"') == unquote_etag(MD5) == MD5


@pytest.mark.parametrize(
    ("facts", "method", "algorithm"),
    [
        (ObjectFacts(5, MD5, checksums={Algorithm.CRC32: "NhCmhg=="}), "full-crc", Algorithm.CRC32),
        (
            ObjectFacts(
                5,
                MD5,
                checksums={Algorithm.CRC32: "x", Algorithm.CRC64NVME: "y", Algorithm.SHA256: "z"},
            ),
            "full-crc",
            Algorithm.CRC64NVME,
        ),
        (ObjectFacts(5, MD5, checksums={Algorithm.SHA256: "z"}), "whole", Algorithm.SHA256),
        (ObjectFacts(5, MD5), "whole", Algorithm.MD5),
        (
            ObjectFacts(20, MD5 + "-3", parts_count=3, first_part_size=8),
            "multipart-etag",
            Algorithm.MD5,
        ),
        (
            ObjectFacts(
                20,
                MD5 + "-3",
                parts_count=3,
                first_part_size=8,
                checksums={Algorithm.CRC32C: "q-3"},
            ),
            "composite",
            Algorithm.CRC32C,
        ),
        (
            ObjectFacts(
                20,
                MD5 + "-3",
                parts_count=3,
                first_part_size=8,
                checksums={Algorithm.CRC32: "q"},
                checksum_type="FULL_OBJECT",
            ),
            "full-crc",
            Algorithm.CRC32,
        ),
        (
            ObjectFacts(
                20, MD5 + "-3", parts_count=3, first_part_size=8, checksums={Algorithm.CRC32: "q"}
            ),
            "crc-parts",
            Algorithm.CRC32,
        ),
    ],
)
def test_cheapest_strong_check_chosen(
    facts: ObjectFacts, method: str, algorithm: Algorithm
) -> None:
    check = choose_check(facts, "checksum")
    assert (check.method, check.algorithm) == (method, algorithm)


def test_composite_without_part_layout_falls_back_to_etag() -> None:
    facts = ObjectFacts(5, MD5, checksums={Algorithm.CRC32: "q-2"})
    assert choose_check(facts, "checksum").method == "whole"


@pytest.mark.parametrize(
    ("facts", "why"),
    [
        (ObjectFacts(5, "abc-not-md5"), "not an MD5"),
        (ObjectFacts(5, MD5, server_side_encryption="aws:kms"), "SSE-KMS"),
        (ObjectFacts(20, MD5 + "-3"), "not an MD5"),
    ],
)
def test_unverifiable_objects_say_why(facts: ObjectFacts, why: str) -> None:
    check = choose_check(facts, "checksum")
    assert check.method == "size"
    assert why in check.note
    assert check.label == "size"


def test_size_only_mode() -> None:
    check = choose_check(ObjectFacts(5, MD5, checksums={Algorithm.CRC32: "x"}), "size")
    assert check.method == "size"
    assert "s3.verify" in check.note


def test_sha_on_a_multipart_object_is_composite_even_unmarked() -> None:
    facts = ObjectFacts(
        20, MD5 + "-3", parts_count=3, first_part_size=8, checksums={Algorithm.SHA256: "z"}
    )
    assert choose_check(facts, "checksum").method == "composite"


@pytest.mark.parametrize("algorithm", [Algorithm.CRC32, Algorithm.CRC32C, Algorithm.CRC64NVME])
def test_one_part_upload_with_an_unmarked_crc_accepts_either_reading(algorithm: Algorithm) -> None:
    # boto3 sends a file of exactly its threshold as a one-part multipart upload; moto states
    # the CRC with no -1 and no type: it may be the part's CRC or the CRC of that CRC.
    facts = ObjectFacts(8, MD5 + "-1", parts_count=1, first_part_size=8, checksums={algorithm: "q"})
    check = choose_check(facts, "checksum")
    assert (check.method, check.algorithm) == ("crc-parts", algorithm)
    assert check.needs_aligned_parts


def test_one_part_upload_etag_is_a_multipart_etag() -> None:
    facts = ObjectFacts(8, MD5 + "-1", parts_count=1, first_part_size=8)
    assert choose_check(facts, "checksum").method == "multipart-etag"


def test_one_part_upload_stated_full_object_is_full_crc() -> None:
    facts = ObjectFacts(
        8,
        MD5 + "-1",
        parts_count=1,
        first_part_size=8,
        checksums={Algorithm.CRC32: "q"},
        checksum_type="FULL_OBJECT",
    )
    assert choose_check(facts, "checksum").method == "full-crc"
