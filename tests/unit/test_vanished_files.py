"""A kept file that vanishes between the plan and its hard link is fetched instead (found by
the chaos run: a folder deleted while its repair was being staged)."""

from __future__ import annotations

from pathlib import Path

from syncd.core.folder_plan import FolderPlan, fetch_instead
from syncd.core.manifest import FileEntry, RemoteObject
from syncd.local.staging import prepare_staging as _prepare_staging


def entry(path: str, size: int) -> FileEntry:
    return FileEntry(path=path, size=size, etag="e", verified_by="md5")


def test_staging_reports_kept_files_that_vanished(tmp_path: Path) -> None:
    folder, staging = tmp_path / "run", tmp_path / "staging"
    folder.mkdir()
    staging.mkdir()
    (folder / "kept.bin").write_bytes(b"k" * 10)
    listing = [RemoteObject("kept.bin", 10, "e"), RemoteObject("gone.bin", 5, "e")]
    plan = FolderPlan(
        False, reuse={"kept.bin": entry("kept.bin", 10), "gone.bin": entry("gone.bin", 5)}
    )
    vanished = _prepare_staging(staging, folder, listing, plan)
    assert vanished == {"gone.bin"}
    assert (staging / "kept.bin").stat().st_ino == (folder / "kept.bin").stat().st_ino
    replanned = fetch_instead(plan, vanished, listing)
    assert set(replanned.reuse) == {"kept.bin"}
    assert [obj.path for obj in replanned.fetch] == ["gone.bin"]
    assert replanned.heal == {"gone.bin": "missing_file"}
    assert replanned.fetch_bytes == 5


def test_nothing_vanished_leaves_the_plan_as_it_was() -> None:
    plan = FolderPlan(False, reuse={"a": entry("a", 1)})
    assert fetch_instead(plan, set(), [RemoteObject("a", 1, "e")]) is plan


def test_an_extra_file_in_a_published_folder_is_set_aside_on_rebuild(tmp_path: Path) -> None:
    from syncd.local.store import LocalStore

    store = LocalStore(tmp_path / "root")
    store.prepare()
    run = "e" * 32
    published = store.run_dir(run)
    published.mkdir()
    (published / "kept.bin").write_bytes(b"k")
    (published / "planted.txt").write_bytes(b"someone's")
    staging = store.staging / f"{run}.resume"
    staging.mkdir()
    (staging / "kept.bin").write_bytes(b"k")
    store.publish(staging, run, owned=True, known={"kept.bin"})
    assert sorted(p.name for p in published.iterdir()) == ["kept.bin"]
    (kept,) = store.quarantine.rglob("planted.txt")
    assert kept.read_bytes() == b"someone's"


def test_a_staging_file_linked_to_a_published_one_is_never_written_through(
    tmp_path: Path,
) -> None:
    """An interrupted build leaves kept files in staging as hard links to the published ones;
    a later build that fetches such a path must not write the published file in place (the
    simulation found a failed sync that had changed the published folder so)."""
    import os

    from syncd.local.files import open_preallocated

    published = tmp_path / "published.bin"
    published.write_bytes(b"published bytes")
    staged = tmp_path / "staged.bin"
    os.link(published, staged)
    for keep in (False, True):
        fd = open_preallocated(staged, 100, keep)
        try:
            os.pwrite(fd, b"new", 0)
        finally:
            os.close(fd)
        assert published.read_bytes() == b"published bytes"
        assert staged.stat().st_ino != published.stat().st_ino
        os.unlink(staged)
        os.link(published, staged)
