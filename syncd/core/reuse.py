"""Files another run folder already holds, by strong identity (pure).

A new registered version usually shares most of its files with the one before (tokenizer,
config, base shards, or all of them when the same binaries are registered again from a new
run). A file is taken from disk instead of the network only when the object listed now and a
file a manifest records are the same bytes by a checksum that covers every byte: the same
full-object checksum, the same single-part MD5 ETag, or the same multipart ETag or composite
checksum over the same part layout. Never path and size alone, and never a file only its size
vouched for (Hugging Face's cache reuses by content hash for the same reason; ModelExpress
refuses path-and-size matches).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from syncd.core.checksum import Algorithm
from syncd.core.manifest import FileEntry, Manifest, RemoteObject
from syncd.core.plan import ObjectFacts, is_md5_etag

__all__ = [
    "Identity",
    "OnDisk",
    "Reusable",
    "identities_of_object",
    "identity_of_entry",
    "index",
    "match",
    "reused_from",
    "reused_said",
]

# (what the value is, the value as the server wrote it, size, part size where parts matter)
Identity = tuple[str, str, int, int | None]

_FULL_OBJECT = frozenset(
    algorithm.value for algorithm in Algorithm if algorithm is not Algorithm.MD5
)


@dataclass(frozen=True)
class OnDisk:
    """A file a manifest of the root records, that may hold a wanted object's bytes."""

    run_id: str
    entry: FileEntry


@dataclass(frozen=True)
class Reusable:
    """A wanted object whose bytes a file on disk holds (re-checked before it is taken)."""

    obj: RemoteObject
    source: OnDisk
    entry: FileEntry  # the manifest entry the new folder records for it


def identity_of_entry(entry: FileEntry) -> Identity | None:
    """What names a recorded file's bytes, from how it was verified; None for a file only its
    size (or nothing strong) vouched for."""
    kind = entry.verified_by
    if kind in _FULL_OBJECT and entry.checksum:
        return (kind, entry.checksum, entry.size, None)
    if kind.endswith("-composite") and entry.checksum and entry.part_size:
        return (kind, _without_part_count(entry.checksum), entry.size, entry.part_size)
    if kind == "md5" and entry.checksum and "-" not in entry.checksum:
        # The MD5 checked: S3's single-part ETag, or a Content-MD5 (Azure) or md5Hash (GCS).
        return ("md5", entry.checksum, entry.size, None)
    if kind == "md5-multipart" and entry.etag and entry.part_size:
        return ("md5-multipart", entry.etag, entry.size, entry.part_size)
    return None


def identities_of_object(facts: ObjectFacts) -> set[Identity]:
    """Every identity an object's HEAD states (its ETag, each checksum)."""
    size, part = facts.size, facts.first_part_size
    multipart = facts.parts_count is not None and facts.parts_count >= 1
    found: set[Identity] = set()
    if is_md5_etag(facts.etag):  # S3's single-part ETag (Azure's and GCS's tokens are not)
        found.add(("md5", facts.etag, size, None))
    elif "-" in facts.etag and part:
        found.add(("md5-multipart", facts.etag, size, part))
    for algorithm, value in facts.checksums.items():
        # A multipart object's CRC of unstated type may be either (verification tells them
        # apart by which one the bytes give; the entry records which).
        if facts.checksum_type != "FULL_OBJECT" and multipart and part:
            composite = _without_part_count(value)
            found.add((f"{algorithm.value}-composite", composite, size, part))
        if facts.checksum_type != "COMPOSITE":
            found.add((algorithm.value, value, size, None))
    return found


def _without_part_count(value: str) -> str:
    # S3 writes a composite checksum as "BASE64-N" (N parts); the manifest records the value
    # as checked, without it. Base64 has no "-", so only the count follows one.
    return value.split("-", 1)[0]


def index(manifests: Iterable[Manifest], exclude: str) -> dict[int, list[OnDisk]]:
    """The root's strongly identified files by size (the cheap first filter), but `exclude`'s
    (the run being built reuses its own files by path already)."""
    by_size: dict[int, list[OnDisk]] = {}
    for manifest in manifests:
        if manifest.run_id == exclude:
            continue
        for entry in manifest.files:
            if identity_of_entry(entry) is not None:
                by_size.setdefault(entry.size, []).append(OnDisk(manifest.run_id, entry))
    return by_size


def match(
    obj: RemoteObject, facts: ObjectFacts, candidates: Iterable[OnDisk], now: float
) -> list[Reusable]:
    """The candidates holding `obj`'s bytes by identity, best first (as listed)."""
    stated = identities_of_object(facts)
    found = []
    for candidate in candidates:
        if identity_of_entry(candidate.entry) in stated:
            entry = replace(
                candidate.entry,
                path=obj.path,
                etag=facts.etag,
                verified_at=now,
                note=f"reused from run {candidate.run_id}",
            )
            found.append(Reusable(obj, candidate, entry))
    return found


def reused_said(count: int, size: int, runs: Iterable[str]) -> str:
    """`4 reused from run ab12... (88.0 MB not downloaded)`, or "" when nothing was: the
    same words in the log line before a sync, after it, and on the status page."""
    named = sorted(set(runs))
    if not count:
        return ""
    plural = "s" if len(named) > 1 else ""
    return (
        f"{count} reused from run{plural} {', '.join(named)} ({size / 1e6:.1f} MB not downloaded)"
    )


def reused_from(taken: Mapping[str, Reusable]) -> str:
    """`reused_said` of a plan's shared files."""
    return reused_said(
        len(taken),
        sum(item.obj.size for item in taken.values()),
        (item.source.run_id for item in taken.values()),
    )
