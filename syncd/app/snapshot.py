"""The JSON behind /api/status and the page: a daemon's state as a person reads it."""

from __future__ import annotations

from typing import Any

from syncd.reconcile.daemon import Daemon

__all__ = ["snapshot"]


def snapshot(daemon: Daemon) -> dict[str, Any]:
    readiness = daemon.readiness()
    return {
        "ready": daemon.ready.is_set(),
        "readiness": {
            "ready": readiness.ready,
            "state": readiness.state,
            "detail": readiness.detail,
        },
        "passes": daemon.passes,
        "started_at": daemon.started_at,
        "targets": [_target(daemon, name) for name in daemon.targets],
        "events": [event.as_json() for event in daemon.status.events],
    }


def _target(daemon: Daemon, name: str) -> dict[str, Any]:
    target, status, rs = daemon.targets[name], daemon.status, daemon.roots.of(name)
    return {
        "name": name,
        "root": str(target.root),
        "selector": target.selector,
        "prefetch": target.prefetch,
        "models": target.models,
        "error": status.target_errors.get(name),
        "error_since": status.target_error_since.get(name),
        "writer": rs.lock.held,
        "lock_holder": None if rs.lock.held else rs.lock.holder(),
        "foreign_folders": rs.foreign,
        "kept_for_rollback": [k.as_json() for k in rs.kept if k.target == name],
        "folders": [
            folder.as_json() for key, folder in sorted(status.folders.items()) if key.target == name
        ],
        "missing_models": status.missing.get(name, {}),
        "endpoints_left_stopped": {
            endpoint: detail
            for (target_name, endpoint), detail in sorted(status.left_stopped.items())
            if target_name == name
        },
        "unresolved": {
            model: error
            for (target_name, model), error in sorted(status.model_errors.items())
            if target_name == name
        },
    }
