"""Taking a file from another run's folder: linked, else copied and checked (local.shared)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from syncd.core.checksum import Algorithm, CrcHasher
from syncd.core.manifest import FileEntry, Manifest, RemoteObject
from syncd.core.reuse import OnDisk, Reusable
from syncd.local.shared import bring_in
from syncd.local.store import LocalStore

RUN = "a" * 32


def recorded(store: LocalStore, data: bytes) -> OnDisk:
    folder = store.run_dir(RUN)
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(data)
    hasher = CrcHasher(Algorithm.CRC32C)
    hasher.update(data)
    entry = FileEntry(
        "w.bin",
        len(data),
        "etag",
        "md5",
        mtime_ns=(folder / "w.bin").stat().st_mtime_ns,
        range_crc32c=((len(data), hasher.value),),
    )
    store.write_atomically(store.manifest_path(RUN), Manifest(RUN, "s3://b/p", (entry,)).to_json())
    return OnDisk(RUN, entry)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "root")
    store.prepare()
    return store


def test_a_file_is_linked_where_the_filesystem_allows(store: LocalStore, tmp_path: Path) -> None:
    source = recorded(store, os.urandom(100_000))
    item = Reusable(RemoteObject("w.bin", 100_000, "etag"), source, source.entry)
    brought = bring_in(store, item, tmp_path / "staging" / "w.bin")
    assert brought is not None
    assert (tmp_path / "staging" / "w.bin").stat().st_ino == (
        store.run_dir(RUN) / "w.bin"
    ).stat().st_ino


def test_where_links_are_refused_it_is_copied_and_checked(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(100_000)
    source = recorded(store, data)

    def refuse(*_: object, **__: object) -> None:
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    item = Reusable(RemoteObject("w.bin", len(data), "etag"), source, source.entry)
    destination = tmp_path / "staging" / "w.bin"
    brought = bring_in(store, item, destination)
    assert brought is not None
    assert destination.read_bytes() == data
    assert destination.stat().st_ino != (store.run_dir(RUN) / "w.bin").stat().st_ino
    assert brought.entry.mtime_ns == destination.stat().st_mtime_ns  # the copy's own


def test_a_candidate_touched_since_its_manifest_is_not_taken(
    store: LocalStore, tmp_path: Path
) -> None:
    source = recorded(store, os.urandom(100_000))
    path = store.run_dir(RUN) / "w.bin"
    with path.open("r+b") as handle:
        handle.write(b"rot")
    os.utime(path, ns=(source.entry.mtime_ns or 0, source.entry.mtime_ns or 0))  # mtime kept
    item = Reusable(RemoteObject("w.bin", 100_000, "etag"), source, source.entry)
    destination = tmp_path / "staging" / "w.bin"
    assert bring_in(store, item, destination) is None  # the range CRC tells
    assert not destination.exists()
