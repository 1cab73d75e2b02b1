"""The record of what was synced into a run folder, and its comparison with a source (pure)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

__all__ = [
    "FileEntry",
    "HookRecord",
    "HookRun",
    "Manifest",
    "RemoteObject",
    "Span",
    "WantedBy",
    "differences",
    "last_move",
]

# Moves whenever the schema grows (2: `hooks` and `unwanted_since` as fields of their own).
# Fields are only ever added, so a reader takes any format from 1 up and ignores the fields it
# does not know: a manifest written by a newer syncd never makes an older one quarantine the
# folder and download it again. A change that is not additive would be a new file name.
FORMAT_VERSION = 2


@dataclass(frozen=True)
class RemoteObject:
    """One object in a source listing; `path` is relative to the source prefix."""

    path: str
    size: int
    etag: str | None = None


@dataclass(frozen=True, order=True)
class Span:
    """Bytes [start, end) of a file and the CRC32C they had when verified."""

    start: int
    end: int
    crc32c: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class FileEntry:
    """One file as synced: where from, and how it was verified."""

    path: str
    size: int
    etag: str | None
    verified_by: str  # crc64nvme, crc32, md5-multipart, size, ...
    checksum: str | None = None  # the value the check compared, as the server wrote it
    part_size: int | None = None
    note: str = ""
    verified_at: float = 0.0
    mtime_ns: int | None = None  # as published; a change means someone touched the file
    # (end offset, CRC32C) of each range as it arrived, ranges back to back from 0: a repair
    # finds the damaged ranges by re-hashing locally and fetches only those. Empty when the
    # file came through the MLflow server (no ranged reads there).
    range_crc32c: tuple[tuple[int, int], ...] = ()

    def spans(self) -> list[Span]:
        """The recorded ranges as (start, end, crc32c)."""
        found = []
        start = 0
        for end, crc in self.range_crc32c:
            found.append(Span(start, end, crc))
            start = end
        return found


@dataclass(frozen=True)
class WantedBy:
    """Which target, model and registry pointer asked for the run."""

    target: str
    model: str
    selector: str
    version: str


@dataclass(frozen=True)
class HookRun:
    """What one after-sync hook did for a move."""

    kind: str
    result: str  # success / error / skipped
    detail: str
    attempts: int


@dataclass(frozen=True)
class HookRecord:
    """One pointer move that put this run in place for serving, and the hooks it ran.

    `adopted` marks a folder found already serving when hooks were first configured (or a
    first start): recorded so later moves are told apart, with nothing run for it.
    `finished` is False from when the move is recorded until its hooks have all returned: a
    record left unfinished means syncd stopped mid-hook, and the hooks run again.
    """

    target: str
    model: str
    version: str
    selector: str
    at: float
    results: tuple[HookRun, ...] = ()
    adopted: bool = False
    finished: bool = True


@dataclass(frozen=True)
class Manifest:
    """`{root}/.syncd/manifests/{run_id}.json`."""

    run_id: str
    source_uri: str
    files: tuple[FileEntry, ...]
    wanted_by: tuple[WantedBy, ...] = ()
    synced_at: float = 0.0
    syncd_version: str = ""
    # Carried over every rewrite (heals, repairs, retention marks): the moves whose hooks ran,
    # newest last, and since when no target of the root wants the run.
    hooks: tuple[HookRecord, ...] = ()
    unwanted_since: float | None = None

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    @property
    def unverified(self) -> list[FileEntry]:
        """Files that only had their size checked."""
        return [entry for entry in self.files if entry.verified_by == "size"]

    def to_json(self) -> str:
        document = _plain(self)
        document["format"] = FORMAT_VERSION
        return json.dumps(document, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        document = json.loads(text)
        written = document.get("format") if isinstance(document, dict) else None
        if not isinstance(written, int) or isinstance(written, bool) or written < 1:
            raise ValueError("not a syncd manifest")
        # Manifests before 0.2 kept these two under a free-form "extra".
        extra = document.get("extra") or {}
        hooks = document.get("hooks", extra.get("hooks", []))
        unwanted = document.get("unwanted_since", extra.get("unwanted_since"))
        return cls(
            run_id=document["run_id"],
            source_uri=document["source_uri"],
            files=tuple(_file_entry(entry) for entry in document["files"]),
            wanted_by=tuple(
                WantedBy(**_known(WantedBy, wanted)) for wanted in document.get("wanted_by", [])
            ),
            synced_at=document.get("synced_at", 0.0),
            syncd_version=document.get("syncd_version", ""),
            hooks=tuple(_hook_record(entry) for entry in hooks if isinstance(entry, dict)),
            unwanted_since=float(unwanted) if isinstance(unwanted, int | float) else None,
        )

    def with_hook_record(self, record: HookRecord, keep: int = 20) -> Manifest:
        """This manifest with `record` as its newest move (replacing one of the same `at`)."""
        others = tuple(r for r in self.hooks if r.at != record.at)
        return replace(self, hooks=(*others, record)[-keep:])


def _plain(value: Any) -> Any:
    """`dataclasses.asdict` for these value types (dataclasses, tuples, scalars) without its
    deep copies: the manifest of 2,000 files was 7% of a one-shot sync's GIL time in it
    (`py-spy record --gil` of `python -m tests.bench.fetch`)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is tuple or kind is list:
        return [_plain(item) for item in value]
    names = _FIELDS.get(kind)
    if names is None:
        if not is_dataclass(value):
            return value
        names = _FIELDS[kind] = tuple(field.name for field in fields(value))
    return {name: _plain(getattr(value, name)) for name in names}


_SCALARS = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}


def _known(kind: type, document: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `document` that `kind` has (a newer syncd may have written more)."""
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = tuple(field.name for field in fields(kind))
    return {name: value for name, value in document.items() if name in names}


def _file_entry(document: dict[str, Any]) -> FileEntry:
    ranges = tuple((int(end), int(crc)) for end, crc in document.get("range_crc32c", ()))
    known = _known(FileEntry, document)
    known["range_crc32c"] = ranges
    return FileEntry(**known)


def _hook_record(document: Mapping[str, Any]) -> HookRecord:
    results = tuple(
        HookRun(
            str(r.get("kind", "")),
            str(r.get("result", "")),
            str(r.get("detail", "")),
            int(r.get("attempts", 0)),
        )
        for r in document.get("results", ())
        if isinstance(r, dict)
    )
    return HookRecord(
        target=str(document["target"]),
        model=str(document["model"]),
        version=str(document["version"]),
        selector=str(document.get("selector", "")),
        at=float(document.get("at", 0.0)),
        results=results,
        adopted=bool(document.get("adopted", False)),
        finished=bool(document.get("finished", True)),  # records before 0.3 were written once
    )


def last_move(
    manifests: Iterable[Manifest], target: str, model: str
) -> tuple[str, HookRecord] | None:
    """The newest recorded move of (target, model) across a root's manifests: (run id, record).

    A version is "already moved to" only when it is this newest one; a rollback to a kept
    folder whose old record is older than another run's is a new move.
    """
    newest: tuple[str, HookRecord] | None = None
    for manifest in manifests:
        for record in manifest.hooks:
            if (record.target, record.model) != (target, model):
                continue
            if newest is None or record.at > newest[1].at:
                newest = (manifest.run_id, record)
    return newest


def differences(manifest: Manifest | None, listing: Iterable[RemoteObject]) -> list[str]:
    """Paths whose synced copy no longer matches the source (added, removed, changed).

    Empty means the manifest describes the source exactly and nothing needs downloading.
    """
    remote = {obj.path: obj for obj in listing}
    if manifest is None:
        return sorted(remote)
    local = {entry.path: entry for entry in manifest.files}
    changed = [
        path
        for path, obj in remote.items()
        if path not in local
        or local[path].size != obj.size
        or (obj.etag is not None and local[path].etag is not None and local[path].etag != obj.etag)
    ]
    removed = [path for path in local if path not in remote]
    return sorted(changed + removed)
