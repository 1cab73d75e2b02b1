"""Resolutions that never change: (model, version, artifact path) -> the run holding the binaries.

A registered version's run, its model_context.json and its parent's artifact URI are fixed
once the version exists, so each is resolved once, kept in memory and saved beside the
manifests; a poll or a restart then costs no resolution calls (pure data, JSON round trip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from syncd.core.ids import is_run_id
from syncd.core.resolution import Basis

__all__ = ["Resolution", "ResolutionCache"]

_BASES = ("model_context", "parent_tag", "version_run")


@dataclass(frozen=True)
class Resolution:
    """Where one version's binaries are."""

    run_id: str
    basis: Basis
    source_uri: str


CacheKey = tuple[str, str, str]  # model, version, artifact path


class ResolutionCache:
    """An in-memory map with a JSON form; entries are only ever added (they cannot change)."""

    def __init__(self) -> None:
        self._entries: dict[CacheKey, Resolution] = {}
        self.dirty = False

    def get(self, model: str, version: str, artifact_path: str) -> Resolution | None:
        return self._entries.get((model, version, artifact_path))

    def put(self, model: str, version: str, artifact_path: str, resolution: Resolution) -> None:
        key = (model, version, artifact_path)
        if self._entries.get(key) != resolution:
            self._entries[key] = resolution
            self.dirty = True

    def __len__(self) -> int:
        return len(self._entries)

    def to_json(self) -> str:
        rows = [
            {
                "model": model,
                "version": version,
                "artifact_path": path,
                "run_id": found.run_id,
                "basis": found.basis,
                "source_uri": found.source_uri,
            }
            for (model, version, path), found in sorted(self._entries.items())
        ]
        return json.dumps({"version": 1, "resolutions": rows}, indent=1)

    def merge_json(self, text: str) -> int:
        """Add the entries of a saved cache; malformed rows are skipped. Returns how many."""
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return 0
        rows = document.get("resolutions") if isinstance(document, dict) else None
        added = 0
        for row in rows if isinstance(rows, list) else []:
            found = _parse_row(row)
            if found is not None:
                key, resolution = found
                self._entries.setdefault(key, resolution)
                added += 1
        return added


def _parse_row(row: Any) -> tuple[CacheKey, Resolution] | None:
    if not isinstance(row, dict):
        return None
    fields = ("model", "version", "artifact_path", "run_id", "basis", "source_uri")
    if not all(isinstance(row.get(name), str) for name in fields):
        return None
    # A hand-edited file must not smuggle a path in: the same checks as a fresh resolution.
    if not is_run_id(row["run_id"]) or row["basis"] not in _BASES:
        return None
    # Nor redirect a download: the source is that run's own artifacts, as MLflow lays them out
    # (`{experiment location}/{run_id}/artifacts`), or the row is resolved again.
    suffix = f"/{row['run_id']}/artifacts/{row['artifact_path'].strip('/')}"
    if not row["source_uri"].rstrip("/").endswith(suffix):
        return None
    key = (row["model"], row["version"], row["artifact_path"])
    return key, Resolution(row["run_id"], cast(Basis, row["basis"]), row["source_uri"])
