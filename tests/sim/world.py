"""A deterministic simulation of one dataset root under many faults at once.

The real Syncer, Downloader (aiobotocore path) and LocalStore, over the in-memory object store
(`tests/support/fake_store.py`) and a real folder on disk, driven by a seeded schedule of
events: objects replaced, added or deleted at the source; requests failing (503, 429, cut
and long bodies, wrong bytes, 412); files deleted, truncated or bit-flipped under the root,
run folders deleted, symlinks planted where syncd writes, a folder syncd did not create
where a run folder should be; a sync cancelled after any number of loop turns; the pointer
moving between two runs. After every step the invariants are checked; after the faults stop,
the root must converge within a few syncs.

Invariants:
- a sync that succeeds leaves the run folder exactly the source: same paths, same bytes;
- a sync that fails or is cancelled leaves the published folder as it was, or (cancelled
  during the shielded publish) exactly the source;
- nothing outside the root is created, changed or deleted (symlinks point there);
- what syncd did not create is never deleted: foreign folders stay, a folder found where a
  run folder goes is kept in quarantine;
- only syncd's own errors escape (no internal error).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from syncd.core.desired import DesiredModel, ModelVersionRef
from syncd.errors import SyncdError
from syncd.local.store import LocalStore
from syncd.metrics import Metrics
from syncd.reconcile.syncer import Syncer
from syncd.remote.retry import RetryPolicy
from syncd.remote.source import Sources
from syncd.remote.store import OneStore
from syncd.settings import S3Settings
from syncd.transfer.engine import Downloader
from tests.support.fake_store import FakeObjectStore

KiB = 1 << 10
RUNS = ("a" * 32, "b" * 32)
FAULTS = ("503", "429", "412", "short", "wrong", "long")
KINDS = (
    "sync",
    "sync",
    "sync",
    "cancelled_sync",
    "fault",
    "fault",
    "replace_object",
    "add_object",
    "delete_object",
    "delete_file",
    "truncate_file",
    "flip_byte",
    "delete_folder",
    "plant_symlink",
    "foreign_in_place",
    "move_pointer",
)


@dataclass(frozen=True)
class Event:
    kind: str
    pick: int  # which object, file or fault (modulo what exists when it runs)
    turns: int = 0  # for a cancelled sync: loop turns before the cancel


def schedule(
    seed: int, length: int, kinds: tuple[str, ...] = KINDS, most_turns: int = 120
) -> list[Event]:
    """The seed's events: the same seed, the same schedule, on any machine."""
    rng = random.Random(seed)
    return [
        Event(rng.choice(kinds), rng.randrange(1 << 16), rng.randrange(1, most_turns))
        for _ in range(length)
    ]


class InvariantError(AssertionError):
    """An invariant failed; says which step and what was seen."""


@dataclass
class World:
    """One root, one source, one pointer; everything a schedule acts on."""

    base: Path
    rng: random.Random
    store: FakeObjectStore = field(default_factory=FakeObjectStore)
    pointer: str = RUNS[0]
    checks: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = self.base / "root"
        self.outside = self.base / "outside"
        self.outside.mkdir()
        (self.outside / "precious.txt").write_text("not syncd's")
        self.local = LocalStore(self.root)
        self.local.prepare()
        (self.root / "hand-copied").mkdir()
        (self.root / "hand-copied" / "weights.bin").write_bytes(b"someone's")
        for run in RUNS:
            for index in range(3):
                self._put(run, f"model/part-{index}.bin", self.rng.randrange(1, 200) * KiB)
            self._put(run, "model/config.json", 40)
        settings = S3Settings(
            part_size=32 * KiB, chunk_size=8 * KiB, max_attempts=3, threaded_reads=False
        )
        self.metrics = Metrics()
        self.downloader = Downloader(settings, OneStore(self.store), self.metrics, sleep=no_sleep)
        retry = RetryPolicy(3, self.metrics, no_sleep)
        self.syncer = Syncer(Sources(None, retry, {"*": self.store}), self.downloader, self.metrics)

    def _put(self, run: str, path: str, size: int) -> None:
        multipart = size > 64 * KiB and self.rng.random() < 0.5
        self.store.put(
            "b", f"{run}/{path}", self.rng.randbytes(size), 32 * KiB if multipart else None
        )

    def close(self) -> None:
        self.downloader.close()

    # ---- what the source and the folder hold -------------------------------------------------

    def source(self, run: str) -> dict[str, bytes]:
        return source_files(self.store, run)

    def folder(self, run: str) -> dict[str, bytes] | None:
        return folder_files(self.root, run)

    def outside_state(self) -> dict[str, str]:
        return {
            p.relative_to(self.outside).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in self.outside.rglob("*")
            if p.is_file()
        }

    # ---- steps ---------------------------------------------------------------------------------

    async def step(self, event: Event) -> None:
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
        before_outside = self.outside_state()
        action: Callable[[Event], object] = getattr(self, f"_{event.kind}")
        result = action(event)
        if asyncio.iscoroutine(result):
            await result
        self._check_always(before_outside)

    async def converge(self, attempts: int = 3) -> int:
        """With the faults gone, the folder must match the source within `attempts` syncs."""
        self.store.faults.clear()
        for attempt in range(1, attempts + 1):
            try:
                await self._sync_checked()
            except SyncdError:
                continue
            if self.folder(self.pointer) == self.source(self.pointer):
                return attempt
        raise InvariantError(f"no convergence within {attempts} syncs")

    def desired(self) -> DesiredModel:
        ref = ModelVersionRef("m", "1" if self.pointer == RUNS[0] else "2", "alias production")
        return DesiredModel(ref, self.pointer, "model_context", f"s3://b/{self.pointer}/model")

    async def _sync_checked(self, turns: int | None = None) -> None:
        run = self.pointer
        before = self.folder(run)
        source = self.source(run)
        task = asyncio.ensure_future(self.syncer.ensure(self.local, "sim", self.desired()))
        if turns is not None:
            for _ in range(turns):
                if task.done():
                    break
                await asyncio.sleep(0)
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            after = self.folder(run)
            self.checks += 1
            if after != before and after != source:
                raise InvariantError(
                    f"a cancelled sync left run {run[:4]} neither old nor new"
                ) from None
            return
        except SyncdError as exc:
            self.checks += 1
            after = self.folder(run)
            if after != before:
                old, new = before or {}, after or {}
                changed = sorted(p for p in {*old, *new} if old.get(p) != new.get(p))
                raise InvariantError(
                    f"a failed sync ({type(exc).__name__}: {exc}) changed the published run "
                    f"{run[:4]}: {', '.join(changed) or 'the folder'}"
                ) from None
            raise
        self.checks += 1
        if self.folder(run) != source:
            raise InvariantError(f"a successful sync left run {run[:4]} unlike its source")

    async def _sync(self, event: Event) -> None:
        try:
            await self._sync_checked()
        except SyncdError:
            pass

    async def _cancelled_sync(self, event: Event) -> None:
        try:
            await self._sync_checked(event.turns)
        except SyncdError:
            pass  # it failed before the cancel landed: checked like any failed sync

    def _fault(self, event: Event) -> None:
        names = sorted(self.source(self.pointer))
        if names:
            self.store.fail(names[event.pick % len(names)], FAULTS[event.pick % len(FAULTS)])  # type: ignore[arg-type]

    def _replace_object(self, event: Event) -> None:
        names = sorted(self.source(self.pointer))
        if names:
            name = names[event.pick % len(names)]
            self._put(self.pointer, f"model/{name}", self.rng.randrange(1, 200) * KiB)

    def _add_object(self, event: Event) -> None:
        self._put(self.pointer, f"model/extra/file-{event.pick % 5}.bin", 3 * KiB)

    def _delete_object(self, event: Event) -> None:
        names = sorted(self.source(self.pointer))
        if len(names) > 1:  # an empty listing is a terminal error, tested elsewhere
            del self.store.objects[f"b/{self.pointer}/model/{names[event.pick % len(names)]}"]

    def _ours(self) -> bool:
        """Damage is done only to folders syncd made (a hand copy is the test's own)."""
        return self.local.read_manifest(self.pointer) is not None

    def _files(self) -> list[Path]:
        folder = self.root / self.pointer
        if folder.is_symlink() or not folder.is_dir() or not self._ours():
            return []
        return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())

    def _delete_file(self, event: Event) -> None:
        files = self._files()
        if files:
            files[event.pick % len(files)].unlink()

    def _truncate_file(self, event: Event) -> None:
        files = self._files()
        if files:
            path = files[event.pick % len(files)]
            os.truncate(path, path.stat().st_size // 2)

    def _flip_byte(self, event: Event) -> None:
        files = [p for p in self._files() if p.stat().st_size]
        if not files:
            return
        path = files[event.pick % len(files)]
        before = path.stat()
        with path.open("r+b") as handle:
            handle.seek(event.pick % before.st_size)
            byte = handle.read(1)
            handle.seek(event.pick % before.st_size)
            handle.write(bytes([byte[0] ^ 0x20]))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # rot: nothing lstat sees
        # what a verify would have found and recorded (the daemon's deep verify, `syncd verify`)
        self.local.damage.record(
            self.pointer, {path.relative_to(self.root / self.pointer).as_posix(): None}
        )

    def _delete_folder(self, event: Event) -> None:
        if self._ours():
            shutil.rmtree(self.root / self.pointer, ignore_errors=True)

    def _plant_symlink(self, event: Event) -> None:
        """A link where syncd writes: into its staging, its manifests, or a run folder."""
        staging = self.root / ".syncd" / "staging" / f"{self.pointer}.resume"
        places = [
            staging,
            self.root / ".syncd" / "manifests" / f"{self.pointer}.json",
            staging / "part-0.bin",  # where the next build writes that file
            self.root / self.pointer / "config.json",
        ]
        if not self._ours():
            places = places[:3]
        place = places[event.pick % len(places)]
        if any(parent.is_symlink() for parent in place.parents):
            return  # inside a link planted earlier: that would plant it outside the root
        if place.exists() or place.is_symlink():
            if place.is_dir() and not place.is_symlink():
                shutil.rmtree(place)
            else:
                place.unlink()
        place.parent.mkdir(parents=True, exist_ok=True)
        target = self.outside / ("precious.txt" if event.pick % 2 else "")
        place.symlink_to(target)  # nothing of syncd's runs now: a sync waits for its threads

    def _foreign_in_place(self, event: Event) -> None:
        """A folder someone copied by hand where the other run's folder goes (no manifest)."""
        other = RUNS[1] if self.pointer == RUNS[0] else RUNS[0]
        folder = self.root / other
        if folder.exists() or (self.root / ".syncd" / "manifests" / f"{other}.json").exists():
            return
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"hand copy")
        self.foreign_copies = getattr(self, "foreign_copies", 0) + 1

    def _move_pointer(self, event: Event) -> None:
        self.pointer = RUNS[1] if self.pointer == RUNS[0] else RUNS[0]

    def _check_always(self, before_outside: dict[str, str]) -> None:
        self.checks += 1
        if self.outside_state() != before_outside:
            raise InvariantError("something outside the root was changed")
        if sorted(p.name for p in self.outside.iterdir()) != ["precious.txt"]:
            raise InvariantError("something was created outside the root")
        hand = self.root / "hand-copied" / "weights.bin"
        if not hand.is_file() or hand.read_bytes() != b"someone's":
            raise InvariantError("a folder syncd did not create was touched")
        copies = getattr(self, "foreign_copies", 0)
        if copies:
            kept = list((self.root / ".syncd" / "quarantine").rglob("weights.bin"))
            in_place = [
                r
                for r in RUNS
                if (self.root / r / "weights.bin").is_file()
                and (self.root / r / "weights.bin").read_bytes() == b"hand copy"
            ]
            if len(kept) + len(in_place) < copies:
                raise InvariantError("a hand-copied run folder was deleted, not set aside")


def source_files(store: FakeObjectStore, run: str) -> dict[str, bytes]:
    """A run's binaries at the source: path under `model/` -> bytes."""
    prefix = f"b/{run}/model/"
    return {
        name[len(prefix) :]: obj.data
        for name, obj in store.objects.items()
        if name.startswith(prefix)
    }


def folder_files(root: Path, run: str) -> dict[str, bytes] | None:
    """A run folder's files (a link shows as `<symlink>`); None when there is no folder."""
    path = root / run
    if path.is_symlink() or not path.is_dir():
        return None
    found = {}
    for item in sorted(path.rglob("*")):
        relative = item.relative_to(path).as_posix()
        if item.is_symlink():
            found[relative] = b"<symlink>"
        elif item.is_file():
            found[relative] = item.read_bytes()
    return found


async def no_sleep(_: float) -> None:
    return None


@dataclass
class Outcome:
    seed: int
    events: int
    checks: int
    counts: dict[str, int]
    failure: str | None = None
    failed_at: int | None = None
    converged_in: int | None = None
    hooks: int = 0  # hook runs (the daemon's world)


async def _play(seed: int, events: list[Event]) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="syncd-sim-") as scratch:
        world = World(Path(scratch), random.Random(seed))
        try:
            for index, event in enumerate(events):
                try:
                    await world.step(event)
                except InvariantError as exc:
                    return Outcome(seed, len(events), world.checks, world.counts, str(exc), index)
                except Exception as exc:  # anything not syncd's own is a bug
                    name = type(exc).__name__
                    return Outcome(
                        seed, len(events), world.checks, world.counts, f"{name}: {exc}", index
                    )
            try:
                converged = await world.converge()
            except Exception as exc:  # an invariant, or anything not syncd's own
                failure = (
                    str(exc) if isinstance(exc, InvariantError) else f"{type(exc).__name__}: {exc}"
                )
                return Outcome(seed, len(events), world.checks, world.counts, failure, len(events))
            return Outcome(seed, len(events), world.checks, world.counts, None, None, converged)
        finally:
            world.close()


def play(seed: int, events: list[Event] | None = None, length: int = 40) -> Outcome:
    """Run one seed's schedule (or the given events) in a fresh world."""
    return asyncio.run(_play(seed, events if events is not None else schedule(seed, length)))


def shrink(seed: int, events: list[Event]) -> list[Event]:
    """The shortest schedule found that still fails: events dropped one at a time."""
    return shortest_failing(events, lambda trial: play(seed, trial).failure is not None)


E = TypeVar("E")


def shortest_failing(events: list[E], fails: Callable[[list[E]], bool]) -> list[E]:
    """Drop events one at a time while the schedule still fails (either world's)."""
    current = list(events)
    changed = True
    while changed:
        changed = False
        for index in range(len(current)):
            trial = current[:index] + current[index + 1 :]
            if fails(trial):
                current, changed = trial, True
                break
    return current
