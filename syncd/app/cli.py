"""The `syncd` command: run, sync, status, publish, demo."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from syncd.app.arguments import EXIT_CONFIG, parser
from syncd.app.logs import configure_logging
from syncd.core.desired import DesiredModel
from syncd.core.ids import is_run_id
from syncd.errors import ConfigError, LocalStoreError, SyncdError, UsageError
from syncd.local.lock import RootLock, take_root
from syncd.local.store import LocalStore
from syncd.reconcile.syncer import Syncer, SyncProgress
from syncd.settings import Settings, TargetSettings, load_settings

__all__ = ["main"]

log = logging.getLogger("syncd")

EXIT_ERROR = 1


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.app.runtime import open_runtime, require_registry

    require_registry(settings)
    hooks_target = _target_for_root(settings, args.root) if args.after_sync else None

    async def sync() -> int:
        async with open_runtime(settings) as runtime:
            registry = runtime.registry
            if args.alias:
                ref = await registry.alias_ref(args.model, args.alias)
            else:
                ref = await registry.version_ref(args.model, args.model_version)
            desired = await registry.resolve(ref, args.artifact_path)
            print(
                f"{args.model} {ref.selector} -> v{ref.version} -> run {desired.run_id} "
                f"({desired.basis.replace('_', ' ')}) from {desired.source_uri}",
                file=sys.stderr,
            )
            store = LocalStore(args.root)
            await asyncio.to_thread(store.prepare)
            lock = await _acquire(store, RootLock(args.root), args.lock_timeout)
            try:
                started = time.monotonic()
                code = await _sync_locked(runtime.syncer, store, desired, args.no_progress)
                if hooks_target is not None:
                    code = await _after_sync(
                        settings, hooks_target, store, desired, time.monotonic() - started
                    )
                return code
            finally:
                lock.release()

    return asyncio.run(sync())


def _target_for_root(settings: Settings, root: Path) -> TargetSettings:
    for target in settings.targets:
        if target.root.resolve() == root.resolve():
            return target
    raise ConfigError(
        f"--after-sync runs a target's hooks: give a --config with a target whose root is {root}"
    )


async def _after_sync(
    settings: Settings,
    target: TargetSettings,
    store: LocalStore,
    desired: DesiredModel,
    seconds: float,
) -> int:
    from syncd.reconcile.hooks import HookRunner
    from syncd.reconcile.moves import fire_once

    results = await fire_once(
        HookRunner(settings.domino), store, target.name, target.after_sync, desired, seconds
    )
    if results is None:
        print(
            f"after_sync hooks already ran for {desired.model} v{desired.ref.version}",
            file=sys.stderr,
        )
        return 0
    for result in results:
        print(f"after_sync {result.kind}: {result.result}: {result.detail}", file=sys.stderr)
    return EXIT_ERROR if any(r.result != "success" for r in results) else 0


async def _acquire(store: LocalStore, lock: RootLock, wait_seconds: float) -> RootLock:
    """The root's writer lock, waiting up to `wait_seconds` while someone else holds it."""
    deadline = time.monotonic() + wait_seconds
    announced = False
    while not await asyncio.to_thread(take_root, store, lock, "syncd sync"):
        if time.monotonic() >= deadline:
            raise LocalStoreError(
                f"{lock.path.parent.parent} is being written by {lock.holder()}; "
                "not writing it at the same time (raise --lock-timeout to wait longer)"
            )
        if not announced:
            print(f"waiting for {lock.holder()} to release {lock.path}", file=sys.stderr)
            announced = True
        await asyncio.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
    return lock


async def _sync_locked(
    syncer: Syncer, store: LocalStore, desired: DesiredModel, no_progress: bool
) -> int:
    from tqdm import tqdm

    progress = SyncProgress()
    with (
        tqdm(unit="B", unit_scale=True, unit_divisor=1024, disable=no_progress or None) as bar,
        _logs_above(bar),
    ):

        def advance(count: int) -> None:
            if bar.total != progress.total_bytes:
                bar.total = progress.total_bytes
            bar.update(count)

        progress.listeners.append(advance)
        outcome = await syncer.ensure(store, "cli", desired, progress)
    folder = store.run_dir(outcome.run_id)
    if outcome.result == "noop":
        print(f"{folder} already in place and matching the source", file=sys.stderr)
    else:
        checks = sorted({entry.verified_by for entry in outcome.manifest.files})
        print(
            f"{folder}: {len(outcome.manifest.files)} files in place "
            f"({outcome.downloaded_files} downloaded, {outcome.reused_files} kept"
            f"{outcome.reused_said}; "
            f"verified by {', '.join(checks)})",
            file=sys.stderr,
        )
    print(folder)
    return 0


@contextmanager
def _logs_above(bar: Any) -> Iterator[None]:
    """While a progress bar is drawn, log lines print above it instead of through it."""
    if bar.disable:
        yield
        return
    root = logging.getLogger()
    originals = list(root.handlers)

    class AboveTheBar(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            bar.write(self.format(record), file=sys.stderr)

    above = AboveTheBar()
    if originals:
        above.setFormatter(originals[0].formatter)
    root.handlers = [above]
    try:
        yield
    finally:
        root.handlers = originals


def _existing_root(root: Path) -> Path:
    if root.is_symlink() or not root.is_dir():
        what = "a symlink" if root.is_symlink() else "not a folder" if root.exists() else "missing"
        raise SyncdError(f"{root} is {what}: give the dataset folder that holds the run folders")
    return root


def _status(args: argparse.Namespace) -> int:
    store = LocalStore(_existing_root(args.root))
    rows: list[dict[str, Any]] = []
    for child in sorted(args.root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        manifest = store.read_manifest(child.name) if is_run_id(child.name) else None
        row: dict[str, Any] = {"run_id": child.name, "managed": manifest is not None}
        if manifest is not None:
            row.update(
                files=len(manifest.files),
                bytes=manifest.total_bytes,
                damaged=sorted(store.damaged(manifest).items()),
                unverified=len(manifest.unverified),
                wanted_by=[f"{w.model} {w.selector} v{w.version}" for w in manifest.wanted_by],
                unwanted_since=manifest.unwanted_since,
            )
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no run folders under {args.root}", file=sys.stderr)
    for row in rows:
        if not row["managed"]:
            print(f"{row['run_id']}  not created by syncd (left alone)")
            continue
        health = (
            "damaged: " + ", ".join(f"{path} ({why})" for path, why in row["damaged"])
            if row["damaged"]
            else "intact"
        )
        was = "; ".join(row["wanted_by"]) or "-"
        if row["unwanted_since"] is not None:
            # Retention's mark: no target wants it; kept for a rollback (keep_previous) or
            # until gc_grace has passed, which the daemon's config decides.
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(row["unwanted_since"]))
            wanted = f"kept for rollback, no target wants it since {when} (was {was})"
        else:
            wanted = f"wanted by {was}"
        print(f"{row['run_id']}  {row['files']} files  {row['bytes']} bytes  {health}  {wanted}")
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from syncd.app.verify_command import run_verify

    return run_verify(args, settings, LocalStore(_existing_root(args.root)))


_PUBLISH_NEEDS = ("numpy", "pandas")  # what logging a pyfunc pulls in beyond mlflow-skinny


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    import importlib.util

    missing = [name for name in _PUBLISH_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise SyncdError(
            "syncd publish logs a pyfunc model, which needs the full MLflow the plain install "
            "leaves out: pip install \".[demo]\" from a checkout (or 'syncd[demo]'); "
            f"missing: {', '.join(missing)}"
        )
    if not settings.mlflow.tracking_uri:
        raise ConfigError("set MLFLOW_TRACKING_URI (or mlflow.tracking_uri in --config)")
    from syncd.publish import publish_model

    # What MLflow prints while logging is meant for someone writing MLflow code (progress
    # bars, run URLs, a CloudPickle caution, pip inference notes); syncd says what happened.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    published = publish_model(
        settings.mlflow.tracking_uri,
        args.model,
        args.folder,
        alias=args.alias,
        artifact_path=args.artifact_path,
        experiment=args.experiment,
    )
    print(
        f"{published.model} v{published.version}: binaries on run {published.parent_run_id}, "
        f"pyfunc on nested run {published.child_run_id}"
        + (f", alias {args.alias} set" if args.alias else "")
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; expected failures end in one line on stderr and a non-zero exit."""
    # MLflow 3 writes an installation id and reports usage from every client process; syncd's
    # processes (daemons, init containers, `syncd fetch`) do not, unless told to.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = parser().parse_args(argv)
    if args.command in ("run", "sync", "fetch"):
        gc.disable()  # until its imports are done (runtime.imports_done)
    try:
        settings = load_settings(getattr(args, "config", None))
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "run":
            from syncd.app.runtime import require_registry, require_roots
            from syncd.app.service import check_port_free, run_service

            require_registry(settings)
            if settings.http.enabled:
                check_port_free(settings.http.host, settings.http.port, "http.port")
            require_roots(settings, getattr(args, "config", None))
            asyncio.run(run_service(settings))
            return 0
        if args.command == "sync":
            return _sync(args, settings)
        if args.command == "status":
            return _status(args)
        if args.command == "verify":
            return _verify(args, settings)
        if args.command == "publish":
            return _publish(args, settings)
        if args.command == "fetch":
            from syncd.app.fetch_command import run_fetch

            return run_fetch(settings, args.pairs, args.artifact_path)
        if args.command == "demo":
            from syncd.app.demo import run_demo

            port = args.port if args.port is not None else settings.http.port
            return run_demo(args.workdir, port, args.once, keep=args.keep)
    except ConfigError as exc:
        # Every problem of the configuration, one line each: fixed in one go, not one per run.
        for line in str(exc).splitlines() or [""]:
            print(f"syncd: config error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except UsageError as exc:
        print(f"syncd {args.command}: {exc} (see syncd {args.command} --help)", file=sys.stderr)
        return EXIT_CONFIG
    except SyncdError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        gc.enable()  # whatever path ended the command
    raise AssertionError(f"unknown command {args.command}")


def entry() -> None:
    """The `syncd` command: `main`, then out without tearing the interpreter down.

    Finalising the modules a sync imported (MLflow's client, botocore, pydantic: millions of
    objects) took ~0.5 s after the folder was already in place (py-spy: the main thread in
    native code only, after `main` returned). Everything that must outlive the process is on
    disk and flushed by then (the folder, its manifest; the lock is released), so the output
    streams are flushed and the process ends at once, as mypy does.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
