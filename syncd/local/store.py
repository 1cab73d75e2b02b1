"""The dataset folder: run folders, staging, manifests and the atomic swap."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from syncd.core.folder_plan import LocalFile, stat_damage
from syncd.core.ids import is_run_id, safe_relative_path
from syncd.core.manifest import Manifest
from syncd.errors import LocalStoreError, UnsafeKeyError, cut, quoted
from syncd.local.damage import DamageLog
from syncd.local.inside import InsideFolder
from syncd.local.layout import Layout, RunFolders
from syncd.local.resume import ResumeState
from syncd.local.swap import extra_entries, flush

__all__ = ["LocalStore", "manifest_lock"]

log = logging.getLogger(__name__)


# One writer per run folder's manifest within a process (the root's lock sees to other
# processes): the syncer, the hooks and retention read-modify-write the same file from
# different worker threads, and none may lose another's fields.
_MANIFEST_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_MANIFEST_LOCKS_GUARD = threading.Lock()


def manifest_lock(root: Path, run_id: str) -> threading.Lock:
    with _MANIFEST_LOCKS_GUARD:
        return _MANIFEST_LOCKS.setdefault((str(root), run_id), threading.Lock())


class LocalStore:
    """A dataset folder: its run folders where `layout` puts them (`{root}/{run_id}` by
    default, `RunFolders`), and `{root}/.syncd/` for syncd's own bookkeeping."""

    def __init__(self, root: Path, layout: Layout | None = None) -> None:
        self.root = root
        self.layout: Layout = layout or RunFolders()
        self.meta = root / ".syncd"
        self.staging = self.meta / "staging"
        self.manifests = self.meta / "manifests"
        self.quarantine = self.meta / "quarantine"
        self.trash = self.meta / "trash"
        self.parts = self.meta / "parts"
        self.damage = DamageLog(self.meta / "damage")

    def prepare(self) -> None:
        """Create the bookkeeping folders (the lock holder clears staging: `clear_staging`)."""
        if self.root.exists() and not self.root.is_dir():
            raise LocalStoreError(
                f"{self.root} is a file, not a folder: give the dataset folder that holds "
                "the run folders"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # Quarantine first: symlinks found in the others are moved into it.
            folders = (self.quarantine, self.staging, self.manifests, self.trash, self.parts)
            for folder in (*folders, self.damage.folder):
                self.real_dir(folder)
        except OSError as exc:
            raise LocalStoreError(f"cannot create {self.meta}: {exc.strerror}") from exc
        if not os.access(self.root, os.W_OK):
            raise LocalStoreError(f"{self.root} is not writable by this process")

    def real_dir(self, path: Path) -> Path:
        """`path` (under the root) as a real folder, never through a symlink.

        Each component from the root down is checked with lstat; a symlink or a file where a
        folder should be is set aside (the link itself, never what it points to) and a fresh
        folder made. Anyone who can write the dataset could otherwise make syncd write,
        chmod or delete outside it.
        """
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            try:
                info = os.lstat(current)
            except FileNotFoundError:
                current.mkdir()
                continue
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
                self.set_aside(current)
                current.mkdir()
        return path

    def set_aside(self, path: Path) -> None:
        """Move something syncd did not put there (a symlink, a stray file) to quarantine."""
        kind = "symlink" if path.is_symlink() else "file"
        quarantine = self.quarantine
        if path != quarantine and quarantine.is_dir() and not quarantine.is_symlink():
            kept = quarantine / f"{path.name}.{kind}.{time.time_ns()}"
            os.rename(path, kept)
            log.warning("moved a %s found at %s to %s (never followed)", kind, path, kept)
        else:
            path.unlink()
            log.warning("removed a %s found at %s (never followed)", kind, path)

    def remove_links(self, folder: Path) -> list[str]:
        """Set aside every symlink inside `folder` (not following any); returns their paths."""
        found = []
        for directory, folders, files in os.walk(folder, followlinks=False):
            for name in [*folders, *files]:
                path = Path(directory) / name
                if path.is_symlink():
                    found.append(str(path.relative_to(folder)))
                    self.set_aside(path)
        return found

    def resume_staging(self, run_id: str) -> Path:
        """Where a run folder is built; an interrupted build is found again here."""
        self.run_dir(run_id)
        folder = self.real_dir(self.staging / f"{run_id}.resume")
        self.remove_links(folder)  # a link planted inside would be written through
        folder.chmod(0o755)  # endpoints usually run as another user and must read the folder
        return folder

    def resume_state(self, run_id: str) -> ResumeState:
        self.run_dir(run_id)
        folder = self.real_dir(self.parts / run_id)
        self.remove_links(folder)
        return ResumeState(folder)

    def run_dir(self, run_id: str) -> Path:
        """The published folder of a run (the run id is checked before it touches a path)."""
        if not is_run_id(run_id):
            raise LocalStoreError(
                f"refusing run id {quoted(run_id)}: not 32 lowercase hex characters"
            )
        return self.layout.run_dir(self, run_id)

    def manifest_path(self, run_id: str) -> Path:
        self.run_dir(run_id)
        return self.manifests / f"{run_id}.json"

    def read_manifest(self, run_id: str) -> Manifest | None:
        """The manifest of a run, or None when absent or unreadable (then the run is rebuilt)."""
        path = self.manifest_path(run_id)
        try:
            manifest = Manifest.from_json(path.read_text())
            for entry in manifest.files:
                # Paths read from disk are untrusted like a listing: never outside the folder.
                safe_relative_path(entry.path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, UnsafeKeyError) as exc:
            log.warning("ignoring unreadable manifest %s: %s", path, cut(str(exc)))
            return None
        if manifest.run_id != run_id:
            log.warning("ignoring manifest %s: it describes run %s", path, manifest.run_id[:40])
            return None
        return manifest

    def update_manifest(
        self, run_id: str, change: Callable[[Manifest | None], Manifest | None]
    ) -> Manifest | None:
        """Read, change and write a run's manifest under its writer lock; `change` returns
        the new manifest (or None to leave it as it is). Returns what is on disk after."""
        lock = manifest_lock(self.root, run_id)
        with lock:
            current = self.read_manifest(run_id)
            updated = change(current)
            if updated is None or updated == current:
                return current
            self.write_atomically(self.manifest_path(run_id), updated.to_json())
            return updated

    def read_state(self, name: str) -> str | None:
        """A small state file of syncd's own under `.syncd/` (e.g. `resolved.json`), or None."""
        try:
            return (self.meta / name).read_text()
        except (OSError, UnicodeDecodeError):
            return None

    def write_state(self, name: str, text: str) -> None:
        """Replace a state file under `.syncd/` atomically."""
        self.write_atomically(self.meta / name, text)

    def write_atomically(self, path: Path, text: str) -> None:
        """Replace `path` (under the root) whole: temp file, fsync, rename."""
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def discard(self, path: Path) -> None:
        if path.is_symlink():
            path.unlink()  # the link only: what it points to is not ours
            return
        shutil.rmtree(path, ignore_errors=True)

    def local_facts(self, manifest: Manifest) -> dict[str, LocalFile] | None:
        """`lstat` of each file the manifest lists (absent ones left out); None when the run
        folder itself is gone."""
        inside = InsideFolder(self.run_dir(manifest.run_id))
        if not inside.usable:
            return None  # gone, or a symlink or a file in its place: never looked through
        folder = inside.folder
        facts = {}
        for entry in manifest.files:
            found = inside.lstat(entry.path)
            if found is not None:
                facts[entry.path] = LocalFile(
                    found.st_size, found.st_mtime_ns, stat.S_ISREG(found.st_mode)
                )
        for extra in extra_entries(folder, {entry.path for entry in manifest.files}):
            found = os.lstat(folder / extra)
            facts[extra] = LocalFile(found.st_size, found.st_mtime_ns, stat.S_ISREG(found.st_mode))
        return facts

    def damaged(self, manifest: Manifest) -> dict[str, str]:
        """Files of the manifest that are gone or touched since publication (stat only)."""
        return stat_damage(manifest, self.local_facts(manifest))

    def manifests_on_disk(self) -> list[Manifest]:
        """Every readable manifest under this root."""
        found = []
        for path in sorted(self.manifests.glob("*.json")):
            if is_run_id(path.stem):
                manifest = self.read_manifest(path.stem)
                if manifest is not None:
                    found.append(manifest)
        return found

    def foreign_folders(self) -> list[str]:
        """Folders under the root syncd did not create: reported, never touched."""
        return self.layout.foreign_folders(self)

    def remove(self, run_id: str) -> None:
        """Take a run folder syncd created out of the dataset (as the layout does it)."""
        self.layout.remove(self, run_id)

    def check_space(self, needed: int) -> None:
        """Fail before downloading when the dataset cannot hold `needed` more bytes."""
        free = shutil.disk_usage(self.root).free
        if needed > free:
            raise LocalStoreError(
                f"not enough space under {self.root}: need {needed} bytes, {free} free"
            )

    def flush(self, staging: Path) -> None:
        """Make a built folder's data durable before it is published (`swap.flush`)."""
        flush(staging)

    def publish(
        self, staging: Path, run_id: str, *, owned: bool, known: set[str] | None = None
    ) -> None:
        """Make `staging` the published folder of `run_id`, as the layout does it."""
        self.layout.publish(self, staging, run_id, owned=owned, known=known)
