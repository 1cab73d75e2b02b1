"""Damage found by a verify, recorded in the root until a sync has repaired it.

`{root}/.syncd/damage/{run_id}.json` holds `{path: [[start, end, crc32c], ...] | null}`: the
damaged ranges of each file (null: the whole file). Whoever writes the root (a daemon on any
host, or a `syncd sync`) reads it before deciding a folder is in place and repairs what it
names; the record goes only once a sync has rebuilt those files. Through the root, so it
works across hosts, like the lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from syncd.core.folder_plan import Suspicion, merge_suspicion
from syncd.core.ids import is_run_id
from syncd.core.manifest import Span
from syncd.errors import cut, quoted

__all__ = ["DamageLog"]

log = logging.getLogger(__name__)


# One writer at a time per run's record: threads of one process by a lock per run, processes
# (a `syncd verify` beside the daemon) by an flock on the records' folder.
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class DamageLog:
    """The damage records of one root (`{root}/.syncd/damage/`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, run_id: str) -> Path:
        if not is_run_id(run_id):
            raise ValueError(f"not a run id: {quoted(run_id)}")
        return self.folder / f"{run_id}.json"

    def read(self, run_id: str) -> dict[str, tuple[Span, ...] | None] | None:
        """What is recorded against a run: empty when nothing is, None when a record is there
        but cannot be read (then nothing of the run can be trusted: fail closed)."""
        try:
            with open(self._path(run_id), encoding="utf-8") as handle:
                document = json.load(handle)
            return _parse(document)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError) as exc:
            log.warning(
                "unreadable damage record of run %s (%s): the whole run is verified",
                run_id,
                cut(str(exc)),
            )
            return None

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
        """Add findings to a run's record (an unreadable record is replaced by them)."""
        with self._locked(run_id):
            self._write(run_id, merge_suspicion(self.read(run_id) or {}, found))

    def clear(self, run_id: str, repaired: Suspicion | None) -> None:
        """Forget a run's record after a sync repaired `repaired` (None: the whole run was
        verified and repaired); findings added meanwhile (another verify) stay."""
        with self._locked(run_id):
            current = self.read(run_id) or {}
            left = (
                {}
                if repaired is None
                else {path: spans for path, spans in current.items() if path not in repaired}
            )
            if left:
                self._write(run_id, left)
            else:
                self._path(run_id).unlink(missing_ok=True)

    @contextmanager
    def _locked(self, run_id: str) -> Iterator[None]:
        path = self._path(run_id)
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(path, threading.Lock())
        with lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            # The folder itself is the lock across processes: no lock file is left behind.
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _write(self, run_id: str, found: Suspicion) -> None:
        """Replace a run's record atomically (a temp file of its own, then rename)."""
        document = {
            path: None if spans is None else [[s.start, s.end, s.crc32c] for s in spans]
            for path, spans in sorted(found.items())
        }
        target = self._path(run_id)
        fd, temp = tempfile.mkstemp(dir=self.folder, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def _parse(document: object) -> dict[str, tuple[Span, ...] | None]:
    if not isinstance(document, dict):
        raise ValueError("not a mapping of paths")
    found: dict[str, tuple[Span, ...] | None] = {}
    for path, spans in document.items():
        if spans is None:
            found[str(path)] = None
        elif isinstance(spans, list):
            found[str(path)] = tuple(Span(int(s), int(e), int(c)) for s, e, c in spans)
        else:
            raise ValueError(f"{cut(str(path))}: not a list of ranges")
    return found
