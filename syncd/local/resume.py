"""Which ranges of a half-downloaded file are already on disk, kept across restarts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["PartMap", "ResumeState"]


class PartMap:
    """The completed ranges of one staging file, valid only for the same object and plan.

    Recorded ranges are only a hint of what need not be fetched again: their bytes are
    re-hashed from disk on resume, so a range lost in a crash (written, never flushed) fails
    verification instead of being trusted.
    """

    def __init__(self, path: Path, identity: dict[str, object]) -> None:
        self._path = path
        self._identity = identity
        self._done: set[tuple[int, int]] = set()
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(document, dict) and document.get("identity") == identity:
            self._done = {(int(a), int(b)) for a, b in document.get("done", [])}

    def done(self) -> set[tuple[int, int]]:
        return set(self._done)

    def mark(self, start: int, end: int) -> None:
        """Record a completed range (atomic rewrite of a small JSON file)."""
        self._done.add((start, end))
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self._path.parent, prefix=".part.")
        with os.fdopen(fd, "w") as handle:
            json.dump({"identity": self._identity, "done": sorted(self._done)}, handle)
        os.replace(temp, self._path)


class ResumeState:
    """The part maps of one run folder being built: `{root}/.syncd/parts/{run_id}/`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def for_file(self, relative: str, identity: dict[str, object]) -> PartMap:
        name = hashlib.sha256(relative.encode()).hexdigest()[:32]
        return PartMap(self.folder / f"{name}.json", identity)

    def bytes_on_disk(self) -> int:
        """Bytes an interrupted build recorded as done (a hint for people: each range is
        re-checked before it counts)."""
        total = 0
        for path in self.folder.glob("*.json") if self.folder.is_dir() else ():
            try:
                document = json.loads(path.read_text())
                total += sum(int(b) - int(a) for a, b in document.get("done", []))
            except (OSError, ValueError, TypeError):
                continue
        return total

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
