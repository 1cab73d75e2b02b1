"""After a sync: restart the Domino endpoint, POST a signed webhook, run a command.

Each hook of a target runs once per (target, model, version) that becomes in place for the
serving pointer, after the folder is published and verified; a failing hook is retried with
backoff and then reported, and never touches the folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import aiohttp

from syncd.errors import HookError
from syncd.local.store import LocalStore
from syncd.remote.registry import DesiredModel
from syncd.settings import DominoRestartHook, DominoSettings, HookSettings, WebhookHook

__all__ = ["HookEvent", "HookResult", "HookRunner", "fire_once", "signature"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Syncd-Signature"
TIMESTAMP_HEADER = "X-Syncd-Timestamp"
_OUTPUT_LIMIT = 4000  # characters of a command's output kept for the log


@dataclass(frozen=True)
class HookEvent:
    """What the hooks are told: the folder that is now in place for a serving pointer."""

    target: str
    model: str
    version: str
    pointer: str  # "alias production" / "stage Production"
    run_id: str
    folder: str
    bytes: int
    files: int
    seconds: float
    verified_by: dict[str, int]  # check -> number of files


@dataclass(frozen=True)
class HookResult:
    kind: str
    result: Literal["success", "error", "skipped"]
    detail: str
    attempts: int
    at: float


class _Retry(Exception):
    """A failure a later attempt may cure (5xx, 429, refused connection, non-zero exit)."""


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>`, what X-Syncd-Signature carries."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class HookRunner:
    """Runs a target's hooks for one event, each with its own retries."""

    def __init__(self, domino: DominoSettings, backoff: float = 1.0) -> None:
        self._domino = domino
        self._backoff = backoff

    async def run(self, hooks: list[HookSettings], event: HookEvent) -> list[HookResult]:
        """Every hook that applies to the event, in order; failures are results, not raised."""
        results = []
        for hook in hooks:
            if hook.domino_restart is not None and hook.domino_restart.model != event.model:
                continue  # only the endpoint mapped to this model restarts
            results.append(await self._one(hook, event))
        return results

    async def _one(self, hook: HookSettings, event: HookEvent) -> HookResult:
        last = ""
        for attempt in range(1, hook.attempts + 1):
            try:
                detail = await self._attempt(hook, event)
            except _Retry as exc:
                last = str(exc)
                if attempt < hook.attempts:
                    delay = self._backoff * 2 ** (attempt - 1)
                    log.warning(
                        "%s: %s hook for %s v%s (run %s) failed, retrying in %.0fs: %s",
                        event.target,
                        hook.kind,
                        event.model,
                        event.version,
                        event.run_id,
                        delay,
                        last,
                    )
                    await asyncio.sleep(delay)
                continue
            except HookError as exc:
                last = str(exc)
                break
            log.info(
                "%s: %s hook for %s v%s (run %s): %s",
                event.target,
                hook.kind,
                event.model,
                event.version,
                event.run_id,
                detail,
            )
            return HookResult(hook.kind, "success", detail, attempt, time.time())
        log.error(
            "%s: %s hook for %s v%s (run %s) failed: %s",
            event.target,
            hook.kind,
            event.model,
            event.version,
            event.run_id,
            last,
        )
        return HookResult(hook.kind, "error", last, attempt, time.time())

    async def _attempt(self, hook: HookSettings, event: HookEvent) -> str:
        if hook.webhook is not None:
            return await self._webhook(hook.webhook, event)
        if hook.domino_restart is not None:
            return await self._restart(hook.domino_restart)
        assert hook.command is not None
        return await self._command(hook.command, hook.timeout, event)

    # ---- webhook -----------------------------------------------------------------------------

    async def _webhook(self, hook: WebhookHook, event: HookEvent) -> str:
        body = json.dumps({"event": "folder_in_place", **asdict(event)}, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(int(time.time()))}
        if hook.secret is not None:
            headers[SIGNATURE_HEADER] = signature(hook.secret.get_secret_value(), body)
        timeout = aiohttp.ClientTimeout(total=hook.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(hook.url, data=body, headers=headers) as response,
            ):
                _raise_for(response.status, f"POST {hook.url}")
                return f"POST {hook.url}: {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retry(f"POST {hook.url}: {type(exc).__name__}: {exc}") from exc

    # ---- Domino ------------------------------------------------------------------------------

    async def _restart(self, hook: DominoRestartHook) -> str:
        base = (self._domino.api_proxy or self._domino.api_host or "").rstrip("/")
        headers = {}
        if not self._domino.api_proxy and self._domino.api_key is not None:
            headers["X-Domino-Api-Key"] = self._domino.api_key.get_secret_value()
        deployment = f"{base}/v4/models/{hook.model_id}/{hook.model_version_id}"
        status_url = f"{base}/models/{hook.model_id}/versions/{hook.model_version_id}/json"
        client_timeout = aiohttp.ClientTimeout(total=60)
        try:
            async with aiohttp.ClientSession(timeout=client_timeout, headers=headers) as session:
                await _post(session, f"{deployment}/stopModelDeployment")
                deadline = time.monotonic() + hook.stop_timeout
                while (state := await _status(session, status_url)) not in _STOPPED:
                    if time.monotonic() > deadline:
                        raise HookError(
                            f"model {hook.model_id} still {state!r} after {hook.stop_timeout:.0f}s"
                        )
                    await asyncio.sleep(hook.poll_interval)
                await _post(session, f"{deployment}/startModelDeployment")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retry(f"Domino API at {base}: {type(exc).__name__}: {exc}") from exc
        return f"Domino model {hook.model_id}/{hook.model_version_id} stopped and started"

    # ---- command -----------------------------------------------------------------------------

    async def _command(self, command: list[str], limit: float, event: HookEvent) -> str:
        env = dict(os.environ)
        env.update(
            SYNCD_TARGET=event.target,
            SYNCD_MODEL=event.model,
            SYNCD_VERSION=event.version,
            SYNCD_RUN_ID=event.run_id,
            SYNCD_FOLDER=event.folder,
            SYNCD_POINTER=event.pointer,
        )
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise HookError(f"cannot run {command[0]}: {exc.strerror or exc}") from exc
        try:
            async with asyncio.timeout(limit):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise _Retry(f"{command[0]} did not finish within {limit:.0f}s") from None
        text = output.decode(errors="replace").strip()[-_OUTPUT_LIMIT:]
        if text:
            log.info("%s: output of %s: %s", event.target, command[0], text)
        if process.returncode != 0:
            raise _Retry(f"{command[0]} exited with {process.returncode}: {text[-300:]}")
        return f"{command[0]} exited 0"


_STOPPED = {"stopped", "inactive", "failed"}
_RECORD_KEYS = ("target", "model", "version")


async def fire_once(
    runner: HookRunner,
    store: LocalStore,
    target: str,
    hooks: list[HookSettings],
    desired: DesiredModel,
    seconds: float,
) -> list[HookResult] | None:
    """Run the hooks for a folder in place, unless its manifest says they ran for this
    (target, model, version) already; None then. What runs is recorded in the manifest
    before and after, so a crash mid-hook never restarts an endpoint twice."""
    manifest = await asyncio.to_thread(store.read_manifest, desired.run_id)
    if manifest is None:
        return None
    record = {"target": target, "model": desired.model, "version": desired.ref.version}
    ran = manifest.extra.get("hooks")
    done = [r for r in (ran if isinstance(ran, list) else []) if isinstance(r, dict)]
    if any(all(r.get(k) == record[k] for k in _RECORD_KEYS) for r in done):
        return None
    checks: dict[str, int] = {}
    for file in manifest.files:
        checks[file.verified_by] = checks.get(file.verified_by, 0) + 1
    event = HookEvent(
        target=target,
        model=desired.model,
        version=desired.ref.version,
        pointer=desired.ref.selector,
        run_id=desired.run_id,
        folder=str(store.run_dir(desired.run_id)),
        bytes=manifest.total_bytes,
        files=len(manifest.files),
        seconds=seconds,
        verified_by=checks,
    )
    entry: dict[str, Any] = {**record, "at": time.time(), "results": []}
    await asyncio.to_thread(_record, store, desired.run_id, entry)
    results = await runner.run(hooks, event)
    entry["results"] = [
        {"kind": r.kind, "result": r.result, "detail": r.detail, "attempts": r.attempts}
        for r in results
    ]
    await asyncio.to_thread(_record, store, desired.run_id, entry)
    return results


def _record(store: LocalStore, run_id: str, entry: dict[str, Any]) -> None:
    manifest = store.read_manifest(run_id)
    if manifest is None:
        return
    ran = manifest.extra.get("hooks")
    done = [r for r in (ran if isinstance(ran, list) else []) if isinstance(r, dict)]
    done = [r for r in done if any(r.get(k) != entry[k] for k in _RECORD_KEYS)]
    extra = {**manifest.extra, "hooks": [*done, entry][-20:]}
    store.write_manifest(replace(manifest, extra=extra))


def _raise_for(status: int, what: str) -> None:
    if status == 429 or status >= 500:
        raise _Retry(f"{what}: HTTP {status}")
    if status >= 400:
        raise HookError(f"{what}: HTTP {status}")


async def _post(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, json={}) as response:
        _raise_for(response.status, f"POST {url}")


async def _status(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        _raise_for(response.status, f"GET {url}")
        document: Any = await response.json(content_type=None)
    # The legacy Model API answers with the version's deployment under a few shapes.
    for candidate in (document, document.get("data") if isinstance(document, dict) else None):
        if isinstance(candidate, dict):
            for key in ("status", "deploymentStatus", "state"):
                if isinstance(candidate.get(key), str):
                    return str(candidate[key]).lower()
    return "unknown"
