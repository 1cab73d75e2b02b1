"""Looking at paths under a folder without ever going through a symlink (blocking).

`os.lstat(folder / "a/b")` does not follow `b`, but it does follow `folder` and `a`: a run
folder or a subfolder replaced by a link would make syncd read, report or write what lies
outside the root. Every component is checked here instead, with the folders already seen
remembered, so a folder of thousands of files costs one `lstat` per file and per folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["InsideFolder", "is_real_dir"]


def is_real_dir(path: Path) -> bool:
    """True for a folder that is not a symlink (lstat: the link itself is looked at)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


class InsideFolder:
    """`lstat` of relative paths below `folder`, refusing any path that passes a link."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._real: set[str] = set()
        self.usable = is_real_dir(folder)

    def _parents_real(self, relative: str) -> bool:
        parts = relative.split("/")[:-1]
        current = ""
        for part in parts:
            current = f"{current}/{part}" if current else part
            if current in self._real:
                continue
            if not is_real_dir(self.folder / current):
                return False
            self._real.add(current)
        return True

    def lstat(self, relative: str) -> os.stat_result | None:
        """The file's own facts, or None when it, or a folder on its way, is missing or a
        link (what is behind a link is never looked at)."""
        if not self.usable or not self._parents_real(relative):
            return None
        try:
            return os.lstat(self.folder / relative)
        except OSError:
            return None

    def regular_file(self, relative: str) -> Path | None:
        """The path of a plain file reached through real folders only, else None."""
        facts = self.lstat(relative)
        if facts is None or not stat.S_ISREG(facts.st_mode):
            return None
        return self.folder / relative
