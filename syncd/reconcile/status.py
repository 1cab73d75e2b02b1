"""What people see: each folder's state, recent events, readiness; and the metrics of outcomes.

The controller reports what happened here; this module only observes (it never decides).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from syncd.core.desired import DesiredModel
from syncd.core.folder_plan import files_said
from syncd.metrics import Metrics
from syncd.reconcile.hooks import HookResult
from syncd.reconcile.queue import Key
from syncd.reconcile.readiness import Readiness, readiness
from syncd.reconcile.registry_health import Level, RegistryHealth
from syncd.reconcile.syncer import SyncOutcome, SyncProgress

__all__ = ["Event", "FolderStatus", "Readiness", "StatusBoard"]

log = logging.getLogger("syncd.reconcile.daemon")

State = Literal["pending", "syncing", "synced", "failed", "standby"]


@dataclass
class FolderStatus:
    """What the status page and /api/status show for one wanted folder."""

    target: str
    model: str
    selector: str
    version: str
    run_id: str
    role: str = "serving"
    state: State = "pending"
    error: str | None = None
    updated_at: float = field(default_factory=time.time)
    progress: SyncProgress | None = None
    last_result: str | None = None
    # When the registry's pointer moved to this version, until the folder is in place.
    moved_at: float | None = None
    alias_to_ready_seconds: float | None = None
    hooks: list[dict[str, Any]] = field(default_factory=list)  # the last after-sync results
    terminal: bool = False  # failed in a way no retry changes (until the pointer moves)
    unreachable: bool = False  # failed because the artifact store could not be reached

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "target": self.target,
            "model": self.model,
            "selector": self.selector,
            "version": self.version,
            "run_id": self.run_id,
            "role": self.role,
            "state": self.state,
            "error": self.error,
            "updated_at": self.updated_at,
            "last_result": self.last_result,
            "alias_to_ready_seconds": self.alias_to_ready_seconds,
            "hooks": self.hooks,
            "terminal": self.terminal,
        }
        if self.progress is not None and self.state == "syncing":
            elapsed = max(time.monotonic() - self.progress.started, 1e-6)
            document["progress"] = {
                "done_bytes": self.progress.done_bytes,
                "total_bytes": self.progress.total_bytes,
                "done_files": self.progress.done_files,
                "total_files": self.progress.total_files,
                "bytes_per_second": self.progress.done_bytes / elapsed,
            }
        return document


@dataclass(frozen=True)
class Event:
    """Something a person watching the status page wants to know happened."""

    at: float
    level: Level
    target: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "level": self.level, "target": self.target, "message": self.message}


class StatusBoard:
    """Folder states, per-target and per-model errors, events; metrics follow from them."""

    def __init__(self, metrics: Metrics, targets: list[str]) -> None:
        self.metrics = metrics
        self.folders: dict[Key, FolderStatus] = {}
        # (target, "model_id/version_id") -> why: Domino endpoints syncd stopped and could not
        # start again; cleared by a later restart of the same endpoint that succeeds.
        self.left_stopped: dict[tuple[str, str], str] = {}
        self.events: deque[Event] = deque(maxlen=50)
        self.registry = RegistryHealth(metrics, targets, self.event)

    # What the registry said, for the status page (the triggers write it through `registry`).
    @property
    def target_errors(self) -> dict[str, str | None]:
        return self.registry.target_errors

    @property
    def target_error_since(self) -> dict[str, float]:
        return self.registry.target_error_since

    @property
    def model_errors(self) -> dict[tuple[str, str], str]:
        return self.registry.model_errors

    @property
    def missing(self) -> dict[str, dict[str, str | None]]:
        return self.registry.missing

    def event(self, level: Level, target: str, message: str) -> None:
        self.events.appendleft(Event(time.time(), level, target, message))

    def desired_changed(self, desired: dict[Key, DesiredModel]) -> None:
        """Republish the desired-version gauges (serving pointers only)."""
        self.metrics.desired_info.clear()
        self.metrics.desired_version.clear()
        for key, wanted in desired.items():
            if wanted.role != "serving":
                continue
            pointer = wanted.ref.selector.split(" ", 1)[-1]
            self.metrics.desired_info.labels(
                target=key.target,
                model=wanted.model,
                alias=pointer,
                version=wanted.ref.version,
                run_id=key.run_id,
            ).set(1)
            if wanted.ref.version.isdigit():
                self.metrics.desired_version.labels(target=key.target, model=wanted.model).set(
                    int(wanted.ref.version)
                )

    # ---- folders ---------------------------------------------------------------------------------

    def wanted(self, key: Key, wanted: DesiredModel, moved_at: float | None) -> None:
        """A folder newly wanted, or wanted another way (version, pointer, role): shown fresh.
        `moved_at`: when its serving pointer moved here (for alias-to-ready)."""
        self.folders[key] = FolderStatus(
            key.target,
            wanted.model,
            wanted.ref.selector,
            wanted.ref.version,
            key.run_id,
            role=wanted.role,
            moved_at=moved_at,
        )

    def unwanted(self, key: Key) -> None:
        self.folders.pop(key, None)

    def standby(self, key: Key) -> None:
        """Another process writes this folder's root."""
        self.folders[key].state = "standby"

    def syncing(self, key: Key, progress: SyncProgress) -> None:
        status = self.folders[key]
        status.state, status.progress = "syncing", progress

    def in_place(self, key: Key, wanted: DesiredModel, outcome: SyncOutcome | None) -> None:
        """The folder is complete and verified (`outcome` None: found so by a local check)."""
        status = self.folders[key]
        status.state, status.error, status.updated_at = "synced", None, time.time()
        status.unreachable = False
        status.terminal = False
        if outcome is not None:
            status.last_result = outcome.result
            self._count(key, wanted, outcome)
        if wanted.role == "serving" and wanted.ref.version.isdigit():
            self.metrics.synced_version.labels(target=key.target, model=wanted.model).set(
                int(wanted.ref.version)
            )
        if status.moved_at is not None:
            waited = max(time.time() - status.moved_at, 0.0)
            status.alias_to_ready_seconds, status.moved_at = waited, None
            self.metrics.alias_to_ready.labels(target=key.target).observe(waited)
        if all(f.state == "synced" for k, f in self.folders.items() if k.target == key.target):
            self.metrics.last_success.labels(target=key.target).set(time.time())

    def _count(self, key: Key, wanted: DesiredModel, outcome: SyncOutcome) -> None:
        result = "success" if outcome.result == "synced" else outcome.result
        self.metrics.syncs.labels(target=key.target, result=result).inc()
        for reason in outcome.healed.values():
            self.metrics.heals.labels(target=key.target, reason=reason).inc()
        if outcome.healed:
            self.metrics.heal_incidents.labels(target=key.target).inc()
        name = f"{wanted.model} v{wanted.ref.version} ({key.run_id[:8]})"
        whole = outcome.downloaded_files - outcome.patched_files
        if outcome.healed:
            reasons = sorted(set(outcome.healed.values()))
            self.event(
                "warning",
                key.target,
                f"healed {name}: {len(outcome.healed)} file(s), {', '.join(reasons)}",
            )
        elif outcome.result == "synced":
            self.event(
                "info",
                key.target,
                f"{name} in place: {outcome.downloaded_bytes / 1e6:.1f} MB downloaded "
                f"({files_said(whole, outcome.patched_files)}{outcome.reused_said})",
            )
        if outcome.result == "synced":
            log.info(
                "%s: %s v%s run %s in place: %d bytes downloaded (%s%s), %d file(s) kept, %.1fs",
                key.target,
                wanted.model,
                wanted.ref.version,
                key.run_id,
                outcome.downloaded_bytes,
                files_said(whole, outcome.patched_files),
                outcome.reused_said,
                outcome.reused_files,
                outcome.seconds,
            )

    def failed(
        self,
        key: Key,
        wanted: DesiredModel,
        error: str,
        retry_in: float | None,
        unreachable: bool = False,
    ) -> None:
        """A sync failed; `retry_in` None: terminal, not retried until the pointer moves or an
        operator asks (SIGHUP). Logged once per attempt, and attempts follow the backoff.
        `unreachable`: the artifact store could not be reached at all."""
        self.metrics.syncs.labels(target=key.target, result="error").inc()
        status = self.folders[key]
        status.state, status.error, status.updated_at = "failed", error, time.time()
        status.last_result = "error"
        status.terminal = retry_in is None
        status.unreachable = unreachable
        self.event("error", key.target, f"{wanted.model} v{wanted.ref.version} failed: {error}")
        when = (
            "not retried until the pointer moves or SIGHUP"
            if retry_in is None
            else f"retrying in {retry_in:.0f}s"
        )
        log.error(
            "%s: %s v%s run %s failed (%s): %s",
            key.target,
            wanted.model,
            wanted.ref.version,
            key.run_id,
            when,
            error,
        )

    # ---- hooks ---------------------------------------------------------------------------------

    def hooks_ran(self, key: Key, wanted: DesiredModel, results: list[HookResult]) -> None:
        """The after-sync results of a move: on the folder, in events and metrics; a Domino
        endpoint left stopped raised as an alarm until a later restart of it succeeds."""
        status = self.folders.get(key)
        if status is not None:
            status.hooks = [
                {"kind": r.kind, "result": r.result, "detail": r.detail, "attempts": r.attempts}
                for r in results
            ]
        for result in results:
            self.metrics.hooks.labels(
                target=key.target, kind=result.kind, result=result.result
            ).inc()
            level: Level = "info" if result.result == "success" else "error"
            self.event(
                level,
                key.target,
                f"{result.kind} for {wanted.model} v{wanted.ref.version}: {result.result}"
                f" ({result.detail})",
            )
            if result.endpoint is None:
                continue
            gauge = self.metrics.endpoints_left_stopped.labels(
                target=key.target, endpoint=result.endpoint
            )
            if result.left_stopped is not None:
                self.left_stopped[(key.target, result.endpoint)] = result.detail
                gauge.set(1)
            elif self.left_stopped.pop((key.target, result.endpoint), None) is not None:
                gauge.set(0)

    # ---- readiness -------------------------------------------------------------------------------

    def readiness(self, first_pass_done: bool) -> Readiness:
        """Ready once the first pass is done; says what it knows, not only yes or no."""
        return readiness(self.registry, self.folders, first_pass_done)
