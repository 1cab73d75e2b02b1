"""Which recorded files may stand in for an object: strong identity only (core.reuse)."""

from __future__ import annotations

from syncd.core.checksum import Algorithm
from syncd.core.manifest import FileEntry, Manifest, RemoteObject
from syncd.core.plan import ObjectFacts
from syncd.core.reuse import OnDisk, identity_of_entry, index, match, reused_said

SIZE = 12 << 20
OBJ = RemoteObject("model.safetensors", SIZE, "abc-2")


def entry(verified_by: str, **fields: object) -> FileEntry:
    base: dict[str, object] = {"path": "x", "size": SIZE, "etag": "abc-2", "part_size": 8 << 20}
    base.update(fields)
    return FileEntry(verified_by=verified_by, **base)  # type: ignore[arg-type]


def facts(**fields: object) -> ObjectFacts:
    base: dict[str, object] = {
        "size": SIZE,
        "etag": "abc-2",
        "parts_count": 2,
        "first_part_size": 8 << 20,
    }
    base.update(fields)
    return ObjectFacts(**base)  # type: ignore[arg-type]


def matches(recorded: FileEntry, stated: ObjectFacts) -> bool:
    return bool(match(OBJ, stated, [OnDisk("r" * 32, recorded)], 0.0))


def test_a_size_only_entry_has_no_identity_and_matches_nothing() -> None:
    assert identity_of_entry(entry("size")) is None
    assert not matches(entry("size"), facts())


def test_a_multipart_etag_matches_only_over_the_same_part_layout() -> None:
    assert matches(entry("md5-multipart"), facts())
    assert not matches(entry("md5-multipart"), facts(first_part_size=16 << 20))
    assert not matches(entry("md5-multipart"), facts(etag="abd-2"))


MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def test_a_single_part_md5_etag_matches_the_same_etag_and_size() -> None:
    recorded = entry("md5", etag=MD5, checksum=MD5, part_size=None)
    assert matches(recorded, facts(etag=MD5, parts_count=None, first_part_size=None))
    assert not matches(recorded, facts(etag=MD5, size=SIZE + 1, parts_count=None))


def test_an_md5_stated_beside_an_opaque_token_matches_by_the_md5() -> None:
    """Azure's Content-MD5 and GCS's md5Hash come beside a version token that is no MD5: the
    MD5 checked is what names the bytes, and a token that looks like nothing S3 writes is
    never taken for one."""
    recorded = entry("md5", etag="0x8DC1A2B3C4D5E6F", checksum=MD5, part_size=None)
    stated = facts(etag="0x8DD0000000000AA", parts_count=None, first_part_size=None)
    assert not matches(recorded, stated)
    assert matches(recorded, facts(**{**stated.__dict__, "checksums": {Algorithm.MD5: MD5}}))
    generation = facts(etag="1733650000123456", parts_count=None, first_part_size=None)
    assert not matches(entry("md5", etag="1733650000123456", checksum=MD5), generation)


def test_full_object_and_composite_checksums_match_as_s3_writes_them() -> None:
    full = entry("crc64nvme", checksum="AAAAAAAAAAA=", etag="other-2")
    assert matches(full, facts(etag="x-2", checksums={Algorithm.CRC64NVME: "AAAAAAAAAAA="}))
    composite = entry("crc32-composite", checksum="54Dihw==", etag="other-2")
    stated = facts(etag="x-2", checksums={Algorithm.CRC32: "54Dihw==-2"}, checksum_type="COMPOSITE")
    assert matches(composite, stated)
    assert not matches(
        composite,
        facts(
            etag="x-2",
            checksums={Algorithm.CRC32: "54Dihw==-2"},
            checksum_type="COMPOSITE",
            first_part_size=5 << 20,
        ),
    )


def test_the_run_being_built_and_size_only_files_are_not_candidates() -> None:
    mine = Manifest("m" * 32, "s3://b/m", (entry("md5-multipart"),))
    other = Manifest("o" * 32, "s3://b/o", (entry("md5-multipart"), entry("size", path="y")))
    found = index([mine, other], exclude=mine.run_id)
    assert [(item.run_id, item.entry.path) for item in found[SIZE]] == [(other.run_id, "x")]


def test_the_words_say_how_many_from_which_run_and_what_was_saved() -> None:
    assert reused_said(0, 0, []) == ""
    assert reused_said(4, 88_000_000, ["a" * 32]) == (
        f"4 reused from run {'a' * 32} (88.0 MB not downloaded)"
    )
