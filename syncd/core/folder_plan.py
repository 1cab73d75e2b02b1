"""Desired vs actual for one run folder -> what to do about each file (pure).

The syncer gathers the facts (the source listing, the manifest, `lstat` of each published file,
range checks of touched files) and carries the plan out; every decision is made here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from syncd.core.manifest import FileEntry, Manifest, RemoteObject, Span, differences
from syncd.core.reuse import Reusable

__all__ = [
    "FolderPlan",
    "LocalFile",
    "Patch",
    "Suspicion",
    "files_said",
    "merge_suspicion",
    "plan_folder",
    "stat_damage",
    "worth_range_check",
]


@dataclass(frozen=True)
class LocalFile:
    """What `lstat` says about one published file."""

    size: int
    mtime_ns: int
    regular: bool  # False: a symlink, folder or device stands where the file should be


# Per published path, what is known beyond `lstat`: None distrusts the whole file (re-download
# it); a tuple names the damaged ranges, found by re-hashing (empty: checked, and intact).
Suspicion = Mapping[str, tuple[Span, ...] | None]


@dataclass(frozen=True)
class Patch:
    """A published file whose damaged ranges are fetched into a copy of it."""

    entry: FileEntry
    spans: tuple[Span, ...]

    @property
    def damaged_bytes(self) -> int:
        return sum(span.length for span in self.spans)


@dataclass(frozen=True)
class FolderPlan:
    """What a sync does for one run folder."""

    noop: bool
    reuse: Mapping[str, FileEntry] = field(default_factory=dict)  # linked from the folder
    patch: Mapping[str, Patch] = field(default_factory=dict)
    fetch: tuple[RemoteObject, ...] = ()
    heal: Mapping[str, str] = field(default_factory=dict)  # damaged path -> reason
    shared: Mapping[str, Reusable] = field(default_factory=dict)  # from another run's folder

    @property
    def fetch_bytes(self) -> int:
        return sum(obj.size for obj in self.fetch) + sum(
            patch.damaged_bytes for patch in self.patch.values()
        )


def fetch_instead(
    plan: FolderPlan, vanished: set[str], listing: Iterable[RemoteObject]
) -> FolderPlan:
    """The plan once files it meant to keep or patch vanished before they were linked (a
    folder deleted mid-repair): those are fetched whole instead."""
    if not vanished:
        return plan
    objects = {obj.path: obj for obj in listing}
    gone = [objects[path] for path in sorted(vanished) if path in objects]
    return replace(
        plan,
        reuse={p: e for p, e in plan.reuse.items() if p not in vanished},
        patch={p: x for p, x in plan.patch.items() if p not in vanished},
        fetch=tuple(sorted((*plan.fetch, *gone), key=lambda obj: obj.path)),
        heal={**plan.heal, **{obj.path: "missing_file" for obj in gone}},
    )


def merge_suspicion(first: Suspicion, second: Suspicion) -> dict[str, tuple[Span, ...] | None]:
    """Both findings at once: a file distrusted whole by either stays so; ranges add up."""
    merged: dict[str, tuple[Span, ...] | None] = dict(first)
    for path, spans in second.items():
        known = merged.get(path, ())
        merged[path] = None if spans is None or known is None else tuple(sorted({*known, *spans}))
    return merged


def stat_damage(manifest: Manifest, local: Mapping[str, LocalFile] | None) -> dict[str, str]:
    """Files of the manifest gone or touched since publication, from `lstat` alone.

    `local` is None when the run folder itself is missing. Reasons: `missing_folder`,
    `missing_file`, `size`, `mtime`; a changed mtime with the same size is how an in-place edit
    or a half-failed copy shows without re-hashing; `extra_file` for anything in the folder the
    manifest does not list (a planted file or symlink: the folder must be the source exactly).
    """
    if local is None:
        return {entry.path: "missing_folder" for entry in manifest.files}
    damaged = {}
    for entry in manifest.files:
        facts = local.get(entry.path)
        if facts is None or not facts.regular:
            damaged[entry.path] = "missing_file"
        elif facts.size != entry.size:
            damaged[entry.path] = "size"
        elif entry.mtime_ns is not None and facts.mtime_ns != entry.mtime_ns:
            damaged[entry.path] = "mtime"
    listed = {entry.path for entry in manifest.files}
    for path in local:
        if path not in listed:
            damaged[path] = "extra_file"
    return damaged


def worth_range_check(manifest: Manifest, local: Mapping[str, LocalFile] | None) -> list[str]:
    """Touched files (same size, other mtime) whose ranges can be re-hashed to find the damage:
    reading them locally costs far less than downloading them again."""
    by_path = {entry.path: entry for entry in manifest.files}
    return [
        path
        for path, reason in stat_damage(manifest, local).items()
        if reason == "mtime" and by_path[path].range_crc32c
    ]


def plan_folder(
    manifest: Manifest | None,
    listing: Iterable[RemoteObject],
    local: Mapping[str, LocalFile] | None,
    suspicion: Suspicion | None = None,
) -> FolderPlan:
    """Decide, per file of the source listing: keep (link), patch (fetch its damaged ranges into
    a copy), or fetch it whole. A file is only kept or patched when the manifest says it came
    from the very object listed now (same size and ETag) and it stands on disk at full size."""
    objects = tuple(sorted(listing, key=lambda obj: obj.path))
    if manifest is None:
        return FolderPlan(noop=False, fetch=objects)
    suspicion = suspicion or {}
    heal = stat_damage(manifest, local)
    refresh = False  # a touched file hashed intact: the manifest learns its new mtime
    previous = {entry.path: entry for entry in manifest.files}
    for path, spans in suspicion.items():
        if path not in previous:
            continue
        if spans is None or spans:
            heal.setdefault(path, "checksum")
        elif heal.get(path) == "mtime":
            del heal[path]
            refresh = True
    if not heal and not refresh and not differences(manifest, objects):
        return FolderPlan(noop=True)
    reuse: dict[str, FileEntry] = {}
    patch: dict[str, Patch] = {}
    fetch: list[RemoteObject] = []
    for obj in objects:
        entry = previous.get(obj.path)
        facts = local.get(obj.path) if local is not None else None
        if entry is None or facts is None or not _in_place(entry, obj, facts):
            fetch.append(obj)
        elif obj.path not in heal:
            reuse[obj.path] = replace(entry, mtime_ns=facts.mtime_ns)
        elif (spans := suspicion.get(obj.path)) and _spans_recorded(entry, spans):
            patch[obj.path] = Patch(entry, spans)
        else:
            fetch.append(obj)  # distrusted whole, or damaged where no recorded range says where
    return FolderPlan(False, reuse, patch, tuple(fetch), heal)


def _in_place(entry: FileEntry, obj: RemoteObject, facts: LocalFile) -> bool:
    """The published file was synced from this very object and stands at its full size."""
    return (
        obj.etag is not None
        and entry.etag == obj.etag
        and entry.size == obj.size
        and facts.regular
        and facts.size == entry.size
    )


def _spans_recorded(entry: FileEntry, spans: tuple[Span, ...]) -> bool:
    """Each span is one of the entry's recorded ranges, so its new bytes can be checked."""
    return set(spans) <= set(entry.spans())


def files_said(whole: int, patched: int) -> str:
    """`3 file(s) whole, 1 patched by range`: the same words before and after a sync."""
    return f"{whole} file(s) whole" + (f", {patched} patched by range" if patched else "")
