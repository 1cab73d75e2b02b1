"""Damage found by a verify, recorded in the root until a sync has repaired it.

`{root}/.syncd/damage/{run_id}.json` holds `{path: [[start, end, crc32c], ...] | null}`: the
damaged ranges of each file (null: the whole file). Whoever writes the root (a daemon on any
host, or a `syncd sync`) reads it before deciding a folder is in place and repairs what it
names; the record goes only once a sync has rebuilt those files. Through the root, so it
works across hosts, like the lock.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from syncd.core.folder_plan import Suspicion, merge_suspicion
from syncd.core.ids import is_run_id
from syncd.core.manifest import Span

__all__ = ["DamageLog"]

log = logging.getLogger(__name__)


class DamageLog:
    """The damage records of one root (`{root}/.syncd/damage/`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, run_id: str) -> Path:
        if not is_run_id(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.folder / f"{run_id}.json"

    def read(self, run_id: str) -> dict[str, tuple[Span, ...] | None]:
        """What is recorded against a run (empty when nothing is)."""
        try:
            with open(self._path(run_id), encoding="utf-8") as handle:
                document = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning(
                "unreadable damage record of run %s (%s): treated as whole files", run_id, exc
            )
            return {}
        found: dict[str, tuple[Span, ...] | None] = {}
        if isinstance(document, dict):
            for path, spans in document.items():
                if spans is None:
                    found[str(path)] = None
                elif isinstance(spans, list):
                    found[str(path)] = tuple(Span(int(s), int(e), int(c)) for s, e, c in spans)
        return found

    def has(self, run_id: str) -> bool:
        return self._path(run_id).exists()

    def runs(self) -> list[str]:
        """Runs with a damage record."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and is_run_id(n[:-5]))

    def record(self, run_id: str, found: Suspicion) -> None:
        """Add findings to a run's record."""
        self._write(run_id, merge_suspicion(self.read(run_id), found))

    def clear(self, run_id: str, repaired: Suspicion) -> None:
        """Forget a run's record after a sync repaired `repaired`; findings added meanwhile
        (another verify during the sync) stay."""
        left = {path: spans for path, spans in self.read(run_id).items() if path not in repaired}
        if left:
            self._write(run_id, left)
        else:
            self._path(run_id).unlink(missing_ok=True)

    def _write(self, run_id: str, found: Suspicion) -> None:
        """Replace a run's record atomically (temp file, then rename)."""
        document = {
            path: None if spans is None else [[s.start, s.end, s.crc32c] for s in spans]
            for path, spans in sorted(found.items())
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self._path(run_id)
        temp = target.with_name(f".{target.name}.{os.getpid()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
