"""The folder plan: every listed file is kept, patched or fetched, and only kept or patched
when the published copy came from the very object listed now."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.core.folder_plan import (
    LocalFile,
    merge_suspicion,
    plan_folder,
    stat_damage,
    worth_range_check,
)
from syncd.core.manifest import FileEntry, Manifest, RemoteObject, Span

RUN = "a" * 32
SPANS = ((10, 111), (20, 222), (25, 333))


def entry(path: str, size: int = 25, etag: str = "e", ranges: bool = True) -> FileEntry:
    return FileEntry(
        path, size, etag, "md5", None, mtime_ns=1, range_crc32c=SPANS if ranges else ()
    )


def manifest(*entries: FileEntry) -> Manifest:
    return Manifest(RUN, "s3://b/p", entries)


def intact(size: int = 25) -> LocalFile:
    return LocalFile(size, 1, True)


def test_first_sync_fetches_everything() -> None:
    listing = [RemoteObject("b", 1, "e"), RemoteObject("a", 1, "e")]
    plan = plan_folder(None, listing, None)
    assert not plan.noop
    assert [obj.path for obj in plan.fetch] == ["a", "b"]


def test_in_place_and_untouched_is_noop() -> None:
    plan = plan_folder(manifest(entry("a")), [RemoteObject("a", 25, "e")], {"a": intact()})
    assert plan.noop


def test_stat_reasons() -> None:
    synced = manifest(entry("gone"), entry("short"), entry("touched"), entry("link"), entry("ok"))
    local = {
        "short": LocalFile(3, 1, True),
        "touched": LocalFile(25, 2, True),
        "link": LocalFile(25, 1, False),
        "ok": intact(),
    }
    assert stat_damage(synced, local) == {
        "gone": "missing_file",
        "short": "size",
        "touched": "mtime",
        "link": "missing_file",
    }
    assert stat_damage(synced, None) == dict.fromkeys(
        ["gone", "short", "touched", "link", "ok"], "missing_folder"
    )
    assert worth_range_check(synced, local) == ["touched"]
    assert worth_range_check(manifest(entry("touched", ranges=False)), local) == []


def test_damaged_ranges_are_patched_and_the_rest_linked() -> None:
    synced = manifest(entry("big"), entry("small"))
    listing = [RemoteObject("big", 25, "e"), RemoteObject("small", 25, "e")]
    local = {"big": LocalFile(25, 2, True), "small": intact()}
    bad = (Span(10, 20, 222),)
    plan = plan_folder(synced, listing, local, {"big": bad})
    assert list(plan.reuse) == ["small"]
    assert plan.fetch == ()
    assert plan.patch["big"].spans == bad
    assert plan.fetch_bytes == 10
    assert plan.heal == {"big": "mtime"}


def test_touched_but_intact_is_relinked_with_its_new_mtime() -> None:
    synced = manifest(entry("big"))
    plan = plan_folder(
        synced, [RemoteObject("big", 25, "e")], {"big": LocalFile(25, 9, True)}, {"big": ()}
    )
    assert not plan.noop
    assert plan.heal == {}
    assert plan.reuse["big"].mtime_ns == 9


def test_ranges_not_recorded_mean_a_whole_fetch() -> None:
    synced = manifest(entry("big"))
    listing = [RemoteObject("big", 25, "e")]
    plan = plan_folder(synced, listing, {"big": intact()}, {"big": (Span(0, 5, 1),)})
    assert [obj.path for obj in plan.fetch] == ["big"]
    assert not plan.patch
    whole = plan_folder(synced, listing, {"big": intact()}, {"big": None})
    assert [obj.path for obj in whole.fetch] == ["big"]


def test_a_changed_source_object_is_never_patched() -> None:
    synced = manifest(entry("big"))
    plan = plan_folder(
        synced, [RemoteObject("big", 25, "other")], {"big": intact()}, {"big": (Span(0, 10, 111),)}
    )
    assert [obj.path for obj in plan.fetch] == ["big"]
    assert not plan.patch


def test_merge_suspicion() -> None:
    one, two = Span(0, 10, 111), Span(10, 20, 222)
    assert merge_suspicion({"a": (two,)}, {"a": (one,), "b": None}) == {"a": (one, two), "b": None}
    assert merge_suspicion({"a": None}, {"a": (one,)}) == {"a": None}


paths = st.sampled_from(["a", "b", "c", "d/e"])
local_files = st.one_of(
    st.none(),
    st.builds(LocalFile, st.sampled_from([3, 25]), st.sampled_from([1, 2]), st.booleans()),
)
suspicions = st.one_of(
    st.none(),
    st.lists(
        st.sampled_from([Span(0, 10, 111), Span(10, 20, 222), Span(0, 10, 9)]), max_size=2
    ).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(
    synced=st.one_of(st.none(), st.lists(paths, unique=True)),
    listed=st.lists(
        st.tuples(paths, st.sampled_from([25, 3]), st.sampled_from(["e", "x"])),
        unique_by=lambda t: t[0],
    ),
    local=st.dictionaries(paths, local_files),
    suspicion=st.dictionaries(paths, suspicions),
    folder_missing=st.booleans(),
)
def test_every_listed_file_gets_exactly_one_fate(
    synced: list[str] | None,
    listed: list[tuple[str, int, str]],
    local: dict[str, LocalFile | None],
    suspicion: dict[str, tuple[Span, ...] | None],
    folder_missing: bool,
) -> None:
    previous = manifest(*(entry(path) for path in synced)) if synced is not None else None
    listing = [RemoteObject(path, size, etag) for path, size, etag in listed]
    facts = None if folder_missing else {p: f for p, f in local.items() if f is not None}
    plan = plan_folder(previous, listing, facts, suspicion)
    if plan.noop:
        assert previous is not None
        assert not plan.fetch
        assert not plan.patch
        assert {e.path for e in previous.files} == {obj.path for obj in listing}
        return
    fates = [*plan.reuse, *plan.patch, *(obj.path for obj in plan.fetch)]
    assert sorted(fates) == sorted(obj.path for obj in listing)
    by_path = {obj.path: obj for obj in listing}
    for path, kept in {**plan.reuse, **{p: patch.entry for p, patch in plan.patch.items()}}.items():
        # kept or patched only when synced from this very object, and on disk at full size
        assert previous is not None
        assert facts is not None
        assert kept.etag == by_path[path].etag
        assert kept.size == by_path[path].size
        assert facts[path].regular
        assert facts[path].size == kept.size
    for path, patch in plan.patch.items():
        assert patch.spans
        assert set(patch.spans) <= set(patch.entry.spans())
        assert path in plan.heal
    for path in plan.reuse:
        assert path not in plan.heal
        assert suspicion.get(path, ()) == ()


def test_anything_the_manifest_does_not_list_is_damage() -> None:
    """A file or symlink planted in a published folder (found by the simulation): the folder
    is rebuilt without it, and it is set aside, not followed and not deleted."""
    synced = manifest(entry("a"))
    local = {"a": intact(), "planted-link": LocalFile(10, 1, False)}
    assert stat_damage(synced, local) == {"planted-link": "extra_file"}
    plan = plan_folder(synced, [RemoteObject("a", 25, "e")], local)
    assert not plan.noop
    assert set(plan.reuse) == {"a"}
    assert plan.heal == {"planted-link": "extra_file"}
