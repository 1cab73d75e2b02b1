import json
from dataclasses import asdict, replace

from syncd.core.manifest import (
    FORMAT_VERSION,
    FileEntry,
    HookRecord,
    HookRun,
    Manifest,
    RemoteObject,
    WantedBy,
    differences,
)

RUN = "a" * 32


def manifest(*entries: FileEntry) -> Manifest:
    return Manifest(
        RUN, "s3://b/p", tuple(entries), (WantedBy("prod", "M", "alias production", "1"),)
    )


def entry(path: str, size: int = 1, etag: str | None = "e") -> FileEntry:
    return FileEntry(path, size, etag, "crc32", "x")


def test_no_manifest_means_everything_differs() -> None:
    assert differences(None, [RemoteObject("b", 1), RemoteObject("a", 1)]) == ["a", "b"]


def test_identical_listing_has_no_differences() -> None:
    assert (
        differences(
            manifest(entry("a"), entry("b")), [RemoteObject("a", 1, "e"), RemoteObject("b", 1, "e")]
        )
        == []
    )


def test_changed_added_and_removed_files_found() -> None:
    synced = manifest(entry("same"), entry("resized"), entry("retagged"), entry("removed"))
    listing = [
        RemoteObject("same", 1, "e"),
        RemoteObject("resized", 2, "e"),
        RemoteObject("retagged", 1, "f"),
        RemoteObject("added", 1, "e"),
    ]
    assert differences(synced, listing) == ["added", "removed", "resized", "retagged"]


def test_sources_without_etags_compare_by_size() -> None:
    assert differences(manifest(entry("a", etag=None)), [RemoteObject("a", 1, None)]) == []


def test_json_round_trip() -> None:
    original = manifest(entry("a"), FileEntry("b", 2, None, "size", None, None, "why", 1.5))
    restored = Manifest.from_json(original.to_json())
    assert restored == original
    assert restored.total_bytes == 3
    assert [item.path for item in restored.unverified] == ["b"]


def test_json_is_what_asdict_would_write() -> None:
    """to_json's own conversion writes what `dataclasses.asdict` did, field for field."""
    files = (
        FileEntry("a.bin", 9, "e", "md5", "x", 8, "n", 1.5, 12, ((4, 1), (9, 2))),
        FileEntry("b.json", 0, None, "size"),
    )
    hook = HookRecord("prod", "M", "1", "alias production", 2.5, (HookRun("r", "ok", "d", 1),))
    synced = replace(manifest(*files), hooks=(hook,), unwanted_since=3.0, synced_at=4.0)
    document = asdict(synced)
    document["format"] = FORMAT_VERSION
    assert synced.to_json() == json.dumps(document, indent=2, sort_keys=True)
