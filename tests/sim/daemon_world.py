"""A deterministic simulation of the whole daemon: triggers, pointers, controller, syncer.

The real `Triggers`, `Pointers`, `Controller` (its `WorkQueue` on a fake clock), `Roots` with
their writer locks, `Syncer`, `Downloader` and `LocalStore`, and the real `MlflowRegistry`
resolving versions through `tests/support/fake_registry.py` (MLflow's own entities), over
the in-memory object store and a real folder. A seeded schedule drives it: alias moves,
rollbacks and new versions; objects replaced or deleted at the source; requests failing;
files and folders deleted or rotted under the root; the registry down; a full disk; the
daemon stopped at any await point (everything cancelled) and started again over the same
root; a second daemon over the same root; webhooks, sweeps, deep verify, time passing.

Invariants after every step:
- every published run folder holds exactly its manifest's files, each with the bytes its
  recorded check names (unless the schedule damaged it since, until syncd publishes it again);
- nothing outside the root is created or changed; a folder syncd did not create is kept;
- no worker died and no internal error was logged;
- only one daemon holds the root, and the one that does not changes nothing in it;
- hooks run once per move: never twice in a row for the same version of a model.
After the faults stop: every model's serving folder matches its source, the page says so,
and the last hook run for each model names the version its alias points at.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncd.core.manifest import Manifest
from syncd.local.store import LocalStore
from syncd.metrics import Metrics
from syncd.reconcile.controller import Controller
from syncd.reconcile.hooks import HookEvent, HookResult, HookRunner
from syncd.reconcile.pointers import Pointers
from syncd.reconcile.queue import Key, WorkQueue
from syncd.reconcile.roots import Roots
from syncd.reconcile.status import StatusBoard
from syncd.reconcile.syncer import Syncer
from syncd.reconcile.triggers import Triggers
from syncd.remote.registry import MlflowRegistry
from syncd.remote.retry import RetryPolicy
from syncd.remote.source import Sources
from syncd.settings import HookSettings, load_settings
from syncd.transfer.engine import Downloader
from tests.sim.world import (
    Event,
    InvariantError,
    Outcome,
    folder_files,
    no_sleep,
    shortest_failing,
    source_files,
)
from tests.sim.world import schedule as seeded_schedule
from tests.support.fake_registry import FakeMlflowClient
from tests.support.fake_store import FakeObjectStore, StoredObject

KiB = 1 << 10
STOPPED = ("", "", "stopped")  # in the hook record: a daemon stopped here
MODELS = ("m1", "m2")
FAULTS = ("503", "429", "412", "short", "wrong", "long", "404")
KINDS = (
    "settle",
    "settle",
    "settle",
    "tick",
    "tick",
    "move",
    "move",
    "move_mid_sync",
    "new_version",
    "webhook",
    "fault",
    "fault",
    "replace_object",
    "delete_object",
    "delete_file",
    "flip_byte",
    "delete_folder",
    "sweep",
    "remote_check",
    "deep_verify",
    "registry_down",
    "disk_full",
    "restart",
    "kill",
    "kill_mid_hook",
    "second_writer",
)


def schedule(seed: int, length: int) -> list[Event]:
    return seeded_schedule(seed, length, KINDS, most_turns=200)


class FakeClock:
    """The queue's timers on simulated time: `advance` fires what falls due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[_Timer] = []

    def later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.now + delay, callback)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> int:
        self.now += seconds
        due = sorted((t for t in self._timers if t.when <= self.now), key=lambda t: t.when)
        self._timers = [t for t in self._timers if t.when > self.now]
        fired = 0
        for timer in due:
            if not timer.cancelled:
                timer.callback()
                fired += 1
        return fired


@dataclass
class _Timer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class RecordingHooks(HookRunner):
    """The hook runner with every hook answered at once and recorded when it returns (the
    once-per-move logic, the manifests' move records and the controller's decisions are the
    real ones). With `world.hold_hooks`, the next hook hangs until its daemon is stopped: an
    endpoint restart under way when SIGTERM lands."""

    def __init__(self, world: World) -> None:
        super().__init__(world.settings.domino)
        self._world = world

    async def run(self, hooks: list[HookSettings], event: HookEvent) -> list[HookResult]:
        world = self._world
        if world.hold_hooks:
            world.hold_hooks = False
            world.held.set()
            await asyncio.Event().wait()  # until cancelled
        world.fired.append((event.model, event.version, event.run_id))
        return [HookResult("command", "success", "recorded", 1, time.time())]


class _Errors(logging.Handler):
    """Internal errors logged anywhere under `syncd` (a traceback is a bug)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "internal error" in record.getMessage():
            self.seen.append(record.getMessage())


class SimDaemon:
    """One daemon process's parts over the shared registry, store and root."""

    def __init__(self, world: World) -> None:
        settings = world.settings
        self.metrics = Metrics()
        self.status = StatusBoard(self.metrics, [t.name for t in settings.targets])
        self.roots = Roots(settings.targets, self.metrics, self.status, 5.0)
        retry = RetryPolicy(3, self.metrics, no_sleep)
        sources = Sources(None, retry, {"*": world.store})
        self.downloader = Downloader(settings.s3, sources, self.metrics, sleep=no_sleep)
        registry = MlflowRegistry(
            "http://sim", settings.resolution, sources.read_uri, client=world.client
        )
        pointers = Pointers(settings.poll_interval)
        self.controller = Controller(
            {t.name: t for t in settings.targets},
            pointers,
            self.roots,
            Syncer(sources, self.downloader, self.metrics),
            self.status,
            self.metrics,
            RecordingHooks(world),
            WorkQueue(world.clock.later),
        )
        self.triggers = Triggers(
            settings, registry, pointers, self.controller, self.roots, self.status, self.metrics
        )
        self.pointers = pointers
        self._fired = world.fired
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for rs in self.roots:
            await asyncio.to_thread(rs.store.prepare)
            await self.triggers.try_lock(rs)
        self._workers = [asyncio.create_task(self.controller.worker()) for _ in range(2)]

    @property
    def writes(self) -> bool:
        return all(rs.lock.held for rs in self.roots)

    def dead_workers(self) -> list[str]:
        return [repr(t.exception()) for t in self._workers if t.done() and not t.cancelled()]

    async def stop(self) -> None:
        """Everything cancelled wherever it is (SIGTERM, or a kill the lock outlives not)."""
        self._fired.append(STOPPED)
        for task in self._workers:
            task.cancel()
        self.controller.cancel_background()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await asyncio.sleep(0)
        self.roots.release_all()
        self.downloader.close()

    async def settle(self) -> None:
        await self.triggers.poll_once()
        await asyncio.wait_for(self.controller.idle(), 60)


@dataclass
class World:
    base: Path
    rng: random.Random
    store: FakeObjectStore = field(default_factory=FakeObjectStore)
    client: FakeMlflowClient = field(default_factory=FakeMlflowClient)
    clock: FakeClock = field(default_factory=FakeClock)
    fired: list[tuple[str, str, str]] = field(default_factory=list)
    checks: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    # (run, path) -> the inode the schedule damaged: its bytes are not syncd's until it
    # writes that file anew (a flip that keeps size and mtime is found only by a deep verify)
    tainted: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    disk_full: bool = False
    hold_hooks: bool = False
    held: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.root = self.base / "root"
        self.outside = self.base / "outside"
        self.outside.mkdir()
        (self.outside / "precious.txt").write_text("not syncd's")
        self.root.mkdir()
        (self.root / "hand-copied").mkdir()
        (self.root / "hand-copied" / "weights.bin").write_bytes(b"someone's")
        self.settings = load_settings(
            overrides={
                "targets": [
                    {
                        "name": "sim",
                        "root": str(self.root),
                        "alias": "production",
                        "models": list(MODELS),
                        "after_sync": [{"command": ["true"]}],
                    }
                ],
                "s3": {
                    "part_size": "32KiB",
                    "chunk_size": "8KiB",
                    "max_attempts": 3,
                    "threaded_reads": False,
                },
                "gc_grace": "1s",
                "keep_previous": 1,
            }
        )
        for model in MODELS:
            for _ in range(2):
                self._add_version(model)
            self.client.set_alias(model, "production", "1")
        self.errors = _Errors()
        logging.getLogger("syncd").addHandler(self.errors)
        self.daemon: SimDaemon | None = None

    # ---- the registry and the source -----------------------------------------------------------

    def _run_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def _add_version(self, model: str) -> str:
        parent, child = self._run_id(), self._run_id()
        self.client.add_run(parent, f"s3://b/{parent}")
        self.client.add_run(child, f"s3://b/{child}", parent=parent)
        context = json.dumps({"run_id": parent}).encode()
        self.store.put("b", f"{child}/model/model_context.json", context)
        for index in range(self.rng.randrange(1, 4)):
            self._put(parent, f"model/shard-{index}.bin", self.rng.randrange(1, 160) * KiB)
        self._put(parent, "model/config.json", 60)
        version = str(len(self.client.versions.get(model, {})) + 1)
        self.client.add_version(model, version, child, f"s3://b/{child}/model")
        return version

    def _put(self, run: str, path: str, size: int) -> None:
        multipart = size > 64 * KiB and self.rng.random() < 0.5
        self.store.put(
            "b", f"{run}/{path}", self.rng.randbytes(size), 32 * KiB if multipart else None
        )

    def serving(self, model: str) -> tuple[str, str]:
        """(version, parent run) the alias points at now."""
        version = self.client.aliases[model]["production"]
        child = self.client.versions[model][version].run_id
        parent = self.client.runs[child][1]
        assert parent is not None
        return version, parent

    def source(self, run: str) -> dict[str, bytes]:
        return source_files(self.store, run)

    def folder(self, run: str) -> dict[str, bytes] | None:
        return folder_files(self.root, run)

    # ---- steps ---------------------------------------------------------------------------------

    @property
    def running(self) -> SimDaemon:
        assert self.daemon is not None
        return self.daemon

    async def start(self) -> None:
        self.daemon = SimDaemon(self)
        await self.daemon.start()

    async def step(self, event: Event) -> None:
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
        outside = self._outside()
        await _within(getattr(self, f"_{event.kind}")(event), f"a {event.kind} step")
        self._check(outside)

    async def _settle(self, event: Event) -> None:
        with self._full_disk():
            await self.running.settle()

    async def _tick(self, event: Event) -> None:
        self.clock.advance(1 + event.pick % 400)  # backoffs run out; their keys come back
        await asyncio.wait_for(self.running.controller.idle(), 60)

    async def _move(self, event: Event) -> None:
        model = MODELS[event.pick % len(MODELS)]
        versions = sorted(self.client.versions[model], key=int)
        self.client.set_alias(model, "production", versions[event.pick % len(versions)])

    async def _new_version(self, event: Event) -> None:
        model = MODELS[event.pick % len(MODELS)]
        version = self._add_version(model)
        if event.pick % 2:
            self.client.set_alias(model, "production", version)

    async def _webhook(self, event: Event) -> None:
        await self._move(event)
        model = MODELS[event.pick % len(MODELS)]
        await self.running.triggers.refresh_model(model)
        await asyncio.wait_for(self.running.controller.idle(), 60)

    def _serving_names(self, event: Event) -> tuple[str, list[str]]:
        _, run = self.serving(MODELS[event.pick % len(MODELS)])
        return run, sorted(self.source(run))

    async def _fault(self, event: Event) -> None:
        _, names = self._serving_names(event)
        if names:
            self.store.fail(names[event.pick % len(names)], FAULTS[event.pick % len(FAULTS)])  # type: ignore[arg-type]

    async def _replace_object(self, event: Event) -> None:
        run, names = self._serving_names(event)
        if names:
            self._put(
                run, f"model/{names[event.pick % len(names)]}", self.rng.randrange(1, 160) * KiB
            )

    async def _delete_object(self, event: Event) -> None:
        run, names = self._serving_names(event)
        if len(names) > 1:
            del self.store.objects[f"b/{run}/model/{names[event.pick % len(names)]}"]

    def _taint(self, path: Path) -> None:
        """Note damage the schedule does to a published file: (folder inode, file inode)."""
        folder = self.root / path.relative_to(self.root).parts[0]
        key = (folder.name, path.relative_to(folder).as_posix())
        self.tainted[key] = (folder.lstat().st_ino, path.lstat().st_ino)

    def _published(self) -> list[str]:
        manifests = LocalStore(self.root).manifests_on_disk()
        return sorted(m.run_id for m in manifests if (self.root / m.run_id).is_dir())

    def _files_of(self, event: Event) -> list[Path]:
        runs = self._published()
        if not runs:
            return []
        run = runs[event.pick % len(runs)]
        return sorted(p for p in (self.root / run).rglob("*") if p.is_file())

    async def _delete_file(self, event: Event) -> None:
        files = self._files_of(event)
        if files:
            path = files[event.pick % len(files)]
            self._taint(path)
            path.unlink()

    async def _flip_byte(self, event: Event) -> None:
        files = [p for p in self._files_of(event) if p.stat().st_size]
        if not files:
            return
        path = files[event.pick % len(files)]
        self._taint(path)
        before = path.stat()
        with path.open("r+b") as handle:
            handle.seek(event.pick % before.st_size)
            byte = handle.read(1)
            handle.seek(event.pick % before.st_size)
            handle.write(bytes([byte[0] ^ 0x20]))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # rot lstat cannot see

    async def _delete_folder(self, event: Event) -> None:
        runs = self._published()
        if runs:
            shutil.rmtree(self.root / runs[event.pick % len(runs)])

    async def _sweep(self, event: Event) -> None:
        await self.running.triggers.sweep()
        await asyncio.wait_for(self.running.controller.idle(), 60)

    async def _remote_check(self, event: Event) -> None:
        """One pass of the remote check: every folder in place compared with its source."""
        controller = self.running.controller
        for key in sorted(controller.in_place):
            controller.enqueue(key)
        await asyncio.wait_for(controller.idle(), 60)

    async def _deep_verify(self, event: Event) -> None:
        await self.running.triggers.deep_verify()
        await asyncio.wait_for(self.running.controller.idle(), 60)

    async def _registry_down(self, event: Event) -> None:
        self.client.down = True
        try:
            await self.running.settle()
        finally:
            self.client.down = False

    async def _disk_full(self, event: Event) -> None:
        self.disk_full = True
        try:
            await self._settle(event)
        finally:
            self.disk_full = False

    async def _restart(self, event: Event) -> None:
        await self.running.stop()
        await self.start()
        await self.running.settle()

    async def _pass_under_way(self, turns: int) -> asyncio.Task[None]:
        """A pass (poll, then the work it queues) given `turns` turns of the loop."""
        work = asyncio.create_task(self.running.settle())
        for _ in range(turns):
            if work.done():
                break
            await asyncio.sleep(0)
        return work

    async def _kill(self, event: Event) -> None:
        """Stopped at an arbitrary await point of a pass (a move first, so there is work)."""
        await self._move(event)
        work = await self._pass_under_way(event.turns)
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        await self.running.stop()
        self._check_published()
        await self.start()

    async def _move_mid_sync(self, event: Event) -> None:
        """A pointer that moves again while the sync of its last move is under way."""
        await self._move(event)
        work = await self._pass_under_way(event.turns)
        model = MODELS[event.pick % len(MODELS)]
        versions = sorted(self.client.versions[model], key=int)
        self.client.set_alias(model, "production", versions[(event.pick // 7) % len(versions)])
        await self.running.triggers.poll_once()
        await asyncio.wait_for(work, 60)
        await asyncio.wait_for(self.running.controller.idle(), 60)

    async def _kill_mid_hook(self, event: Event) -> None:
        """Stopped while a move's hooks run (a move first, so there is one)."""
        self.hold_hooks, self.held = True, asyncio.Event()
        await self._move(event)
        work = asyncio.create_task(self.running.settle())
        held = asyncio.create_task(self.held.wait())
        await asyncio.wait([work, held], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        for task in (work, held):
            task.cancel()
        await asyncio.gather(work, held, return_exceptions=True)
        self.hold_hooks = False
        await self.running.stop()
        self._check_published()
        await self.start()

    async def _second_writer(self, event: Event) -> None:
        """Another daemon over the same root while this one runs: it must stand by."""
        await self._move(event)
        second = SimDaemon(self)
        await second.start()
        before = _tree(self.root)
        try:
            if second.writes:
                raise InvariantError("a second daemon took the lock of a root already held")
            await second.settle()
            if _tree(self.root) != before:
                raise InvariantError("a daemon standing by changed the root")
            if any(f.state not in ("standby",) for f in second.status.folders.values()):
                raise InvariantError("a daemon standing by shows folders as other than standby")
        finally:
            await second.stop()
        await self.running.settle()

    @contextmanager
    def _full_disk(self) -> Iterator[None]:
        if not self.disk_full:
            yield
            return
        real = os.posix_fallocate

        def no_space(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        os.posix_fallocate = no_space
        try:
            yield
        finally:
            os.posix_fallocate = real

    # ---- invariants ----------------------------------------------------------------------------

    def _outside(self) -> dict[str, str]:
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in self.outside.iterdir()
            if p.is_file()
        }

    def _check(self, outside: dict[str, str]) -> None:
        self.checks += 1
        if self._outside() != outside or len(list(self.outside.iterdir())) != 1:
            raise InvariantError("something outside the root was created or changed")
        hand = self.root / "hand-copied" / "weights.bin"
        if not hand.is_file() or hand.read_bytes() != b"someone's":
            raise InvariantError("a folder syncd did not create was touched")
        dead = self.running.dead_workers()
        if dead:
            raise InvariantError(f"a worker died: {dead[0]}")
        if self.errors.seen:
            raise InvariantError(f"an internal error was logged: {self.errors.seen[0]}")
        self._check_published()
        self._check_hooks()

    def _check_published(self) -> None:
        """Every published folder holds its manifest's files with their recorded bytes."""
        for manifest in LocalStore(self.root).manifests_on_disk():
            run = manifest.run_id
            folder = self.root / run
            if not folder.is_dir():
                continue
            self.checks += 1
            damaged = {
                path
                for (r, path), inodes in self.tainted.items()
                if r == run and _still_damaged(folder, path, inodes)
            }
            problem = _unlike_manifest(folder, manifest, damaged)
            if problem:
                raise InvariantError(f"published run {run[:6]}: {problem}")

    def _check_hooks(self) -> None:
        """Once per move: never twice in a row for one version, but across a stop (which may
        land mid-hook: those hooks run again at the next start, at least once)."""
        last: dict[str, tuple[str, str]] = {}
        for model, version, run in self.fired:
            if (model, version, run) == STOPPED:
                last.clear()
            elif last.get(model) == (version, run):
                raise InvariantError(f"hooks ran twice in a row for {model} v{version}")
            else:
                last[model] = (version, run)

    async def converge(self, rounds: int = 6) -> int:
        """Faults gone: every serving folder in place, exact, shown, its move announced."""
        self.store.faults.clear()
        # The operator asks again (SIGHUP): what a 404 or a refusal parked is tried once more.
        self.running.controller.queue.retry_now()
        for attempt in range(1, rounds + 1):
            await self.running.settle()
            await self._remote_check(Event("remote_check", 0))
            await self.running.triggers.deep_verify()
            await asyncio.wait_for(self.running.controller.idle(), 60)
            self.clock.advance(600)  # every backoff over
            await asyncio.wait_for(self.running.controller.idle(), 60)
            if self._converged():
                self._check(self._outside())
                return attempt
        raise InvariantError(f"no convergence within {rounds} passes: {self._why_not()}")

    def _converged(self) -> bool:
        return not self._why_not()

    def _why_not(self) -> str:
        for model in MODELS:
            version, run = self.serving(model)
            have, want = self.folder(run), self.source(run)
            if have != want:
                status = self.running.status.folders.get(Key("sim", run))
                differ = sorted(
                    p for p in {*(have or {}), *want} if (have or {}).get(p) != want.get(p)
                )
                shown = f"{status.state}: {status.error}" if status else "not on the page"
                return f"{model} v{version} run {run[:6]} unlike its source ({differ}; {shown})"
            status = self.running.status.folders.get(Key("sim", run))
            if status is None or status.state != "synced":
                return f"{model} v{version}: page says {status.state if status else 'nothing'}"
            fired = [f for f in self.fired if f[0] == model and f != STOPPED]
            if not fired or fired[-1][1:] != (version, run):
                return f"{model}: last hook run {fired[-1] if fired else None}, serving v{version}"
        return ""

    def close(self) -> None:
        logging.getLogger("syncd").removeHandler(self.errors)


async def _within(job: Coroutine[Any, Any, None], what: str, seconds: float = 120) -> None:
    """Liveness: a step that does not end is a failure, with what every task waits on."""
    task = asyncio.ensure_future(job)
    done, _ = await asyncio.wait([task], timeout=seconds)
    if task in done:
        return task.result()
    stuck = []
    for other in asyncio.all_tasks():
        if other is asyncio.current_task():
            continue
        frames = other.get_stack(limit=3)
        where = " < ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames)
        stuck.append(f"{other.get_name()}: {where}")
    task.cancel()
    raise InvariantError(f"{what} did not end within {seconds:.0f}s; tasks: {'; '.join(stuck)}")


def _still_damaged(folder: Path, path: str, inodes: tuple[int, int]) -> bool:
    """The schedule's damage is still there: the same file, or (deleted) the same folder,
    which syncd has not published anew since."""
    file = _inode(folder / path)
    return file == inodes[1] or (file is None and _inode(folder) == inodes[0])


def _inode(path: Path) -> int | None:
    try:
        return path.lstat().st_ino
    except FileNotFoundError:
        return None


def _unlike_manifest(folder: Path, manifest: Manifest, damaged: set[str]) -> str:
    present = {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()
    }
    listed = {entry.path for entry in manifest.files}
    if present | damaged != listed | damaged:
        return f"files {sorted(present ^ listed)} differ from its manifest"
    for entry in manifest.files:
        if entry.path in damaged:
            continue  # the schedule's own rot, still in place: not syncd's bytes
        data = (folder / entry.path).read_bytes()
        if len(data) != entry.size:
            return f"{entry.path} has {len(data)} bytes, its manifest {entry.size}"
        if entry.etag is not None:
            part = entry.part_size if entry.etag and "-" in entry.etag else None
            if StoredObject(data, part).etag != entry.etag:
                return f"{entry.path} does not hash to its recorded ETag"
    return ""


def _tree(root: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(".syncd/lock"):
            continue  # the standby daemon opens the lock file to try it
        stat = path.lstat()
        found[relative] = (stat.st_mode, stat.st_size, stat.st_mtime_ns)
    return found


async def _wait(task: asyncio.Future[Any]) -> None:
    await task


async def _play(seed: int, events: list[Event]) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="syncd-dsim-") as scratch:
        world = World(Path(scratch), random.Random(seed))
        outcome = Outcome(seed, len(events), 0, world.counts)
        try:
            await world.start()
            await world.running.settle()
            for index, event in enumerate(events):
                outcome.failed_at = index
                await world.step(event)
            outcome.failed_at = len(events)
            converging = asyncio.ensure_future(world.converge())
            await _within(_wait(converging), "convergence", 300)
            outcome.converged_in = converging.result()
            outcome.failed_at = None
        except InvariantError as exc:
            outcome.failure = str(exc)
        except Exception as exc:  # anything not an invariant is a bug of syncd or the world
            outcome.failure = f"{type(exc).__name__}: {exc}"
        finally:
            outcome.checks = world.checks
            outcome.hooks = len([f for f in world.fired if f != STOPPED])
            if world.daemon is not None:
                await world.daemon.stop()
            world.close()
        return outcome


def play(seed: int, events: list[Event] | None = None, length: int = 30) -> Outcome:
    return asyncio.run(_play(seed, events if events is not None else schedule(seed, length)))


def shrink(seed: int, events: list[Event]) -> list[Event]:
    return shortest_failing(events, lambda trial: play(seed, trial).failure is not None)
