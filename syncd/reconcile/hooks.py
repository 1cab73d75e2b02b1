"""After a sync: restart the Domino endpoint, POST a signed webhook, run a command.

Each hook of a target runs once per pointer move that puts a version in place for serving
(a new version, a promoted pre-staged one, a rollback to a kept folder), after the folder is
published and verified; never for a heal, a repair, a no-op or a restart. A failing hook is
retried with backoff and then reported, and never touches the folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal, TypeVar

import aiohttp

from syncd.errors import HookError
from syncd.remote.domino import Deployment, DominoApi, DominoBusyError
from syncd.remote.failure import hide_url, host_of
from syncd.settings import DominoRestartHook, DominoSettings, HookSettings, WebhookHook

__all__ = [
    "COMMAND_BASE_ENV",
    "HookEvent",
    "HookResult",
    "HookRunner",
    "command_environment",
    "signature",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    # "model_id/version_id" of a Domino endpoint syncd stopped and could not start again
    left_stopped: str | None = None
    # "model_id/version_id" restarted (also on success), for clearing a left-stopped alarm
    endpoint: str | None = None


def _result(
    result: Literal["success", "error"],
    detail: str,
    attempts: int,
    endpoint: str | None = None,
    *,
    stopped: bool = False,
) -> HookResult:
    return HookResult(
        "domino_restart",
        result,
        detail,
        attempts,
        time.time(),
        left_stopped=endpoint if stopped else None,
        endpoint=endpoint,
    )


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
        if hook.domino_restart is not None:
            result = await self._restart(hook, hook.domino_restart)
            level = logging.INFO if result.result == "success" else logging.ERROR
            log.log(
                level,
                "%s: domino_restart hook for %s v%s (run %s): %s",
                event.target,
                event.model,
                event.version,
                event.run_id,
                result.detail,
            )
            return result
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
        assert hook.command is not None
        return await self._command(hook.command, hook.timeout, event, hook.pass_env)

    # ---- webhook -----------------------------------------------------------------------------

    async def _webhook(self, hook: WebhookHook, event: HookEvent) -> str:
        body = json.dumps({"event": "folder_in_place", **asdict(event)}, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(int(time.time()))}
        if hook.secret is not None:
            headers[SIGNATURE_HEADER] = signature(hook.secret.get_secret_value(), body)
        timeout = aiohttp.ClientTimeout(total=hook.timeout)
        # Slack and Teams URLs are bearer secrets (the token is the path): every word said
        # about this POST names the host only.
        where = f"POST {host_of(hook.url)}"
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(hook.url, data=body, headers=headers) as response,
            ):
                _raise_for(response.status, where)
                return f"{where}: {response.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            said = hide_url(f"{type(exc).__name__}: {exc}", hook.url)
            raise _Retry(f"{where}: {said}") from exc

    # ---- Domino ------------------------------------------------------------------------------

    async def _restart(self, hook: HookSettings, restart: DominoRestartHook) -> HookResult:
        """Stop, wait for stopped, start, wait for Running: each step retried on its own, so a
        failed start is retried as a start and an endpoint syncd stopped is never left stopped
        without saying so loudly."""
        model = restart.model_id
        project = restart.project_id or self._domino.project_id
        stopped_ours = False
        version = restart.model_version_id or "?"
        try:
            async with DominoApi(self._domino) as api:
                if restart.model_version_id is None:
                    assert project is not None  # settings refuse a hook without either
                    version = await self._steps(
                        hook,
                        "look up the active version",
                        lambda: api.active_version(model, project),
                    )
                where = f"Domino model {model}/{version}"
                await self._steps(hook, f"stop {where}", lambda: api.stop(model, version))
                stopped_ours = True
                state = await self._until(
                    api,
                    model,
                    version,
                    lambda d: d.stopped,
                    restart.stop_timeout,
                    restart.poll_interval,
                )
                if not state.stopped:
                    log.warning(
                        "%s still %s after %.0fs; starting it anyway",
                        where,
                        state,
                        restart.stop_timeout,
                    )
                return await self._start(api, hook, restart, version)
        except HookError as exc:
            if stopped_ours:
                return _result(
                    "error",
                    f"Domino model {model}/{version} LEFT STOPPED: {exc}",
                    0,
                    f"{model}/{version}",
                    stopped=True,
                )
            return _result("error", str(exc), 1)

    async def _start(
        self, api: DominoApi, hook: HookSettings, restart: DominoRestartHook, version: str
    ) -> HookResult:
        """Start the endpoint syncd stopped and wait for Running; a start that fails (refused,
        or a build that ends Failed) is retried as a start, never by stopping again."""
        model = restart.model_id
        where = f"Domino model {model}/{version}"
        last = ""
        attempts = 0
        try:
            for attempts in range(1, hook.attempts + 1):
                try:
                    await api.start(model, version)
                    state = await self._until(
                        api,
                        model,
                        version,
                        lambda d: d.running,
                        restart.start_timeout,
                        restart.poll_interval,
                        fail_on_stopped=True,
                    )
                    if state.running:
                        return _result(
                            "success",
                            f"{where} stopped and started: {state} (auth: {api.auth})",
                            attempts,
                            f"{model}/{version}",
                        )
                    last = f"{where} is {state} after the start"
                except DominoBusyError as exc:
                    last = str(exc)
                if attempts < hook.attempts:
                    delay = self._backoff * 2 ** (attempts - 1)
                    log.warning("%s: start failed, starting again in %.0fs: %s", where, delay, last)
                    await asyncio.sleep(delay)
            last = f"{hook.attempts} start attempts failed: {last}"
        except HookError as exc:
            last = str(exc)
        return _result(
            "error", f"{where} LEFT STOPPED: {last}", attempts, f"{model}/{version}", stopped=True
        )

    async def _steps(self, hook: HookSettings, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """One Domino call, retried with backoff while Domino is busy."""
        for attempt in range(1, hook.attempts + 1):
            try:
                return await step()
            except DominoBusyError as exc:
                if attempt == hook.attempts:
                    raise HookError(f"cannot {what}: {exc}") from exc
                delay = self._backoff * 2 ** (attempt - 1)
                log.warning("cannot %s, retrying in %.0fs: %s", what, delay, exc)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _until(
        self,
        api: DominoApi,
        model: str,
        version: str,
        done: Callable[[Deployment], bool],
        limit: float,
        interval: float,
        *,
        fail_on_stopped: bool = False,
    ) -> Deployment:
        """Poll the deployment until `done`, the deadline, or (after a start) a settled stop."""
        deadline = time.monotonic() + limit
        state = Deployment("unknown", True)
        polls = 0
        moved = False
        while True:
            try:
                state = await api.deployment(model, version)
            except DominoBusyError as exc:
                log.info("Domino status of %s/%s not readable yet: %s", model, version, exc)
            else:
                polls += 1
                if done(state):
                    return state
                moved = moved or not state.stopped
                # After a start, a deployment back at a stopped state (a failed build, or a
                # start Domino dropped) will not get to Running by waiting.
                if fail_on_stopped and state.stopped and (moved or polls >= 3):
                    return state
            if time.monotonic() > deadline:
                return state
            await asyncio.sleep(interval)

    # ---- command -----------------------------------------------------------------------------

    async def _command(
        self, command: list[str], limit: float, event: HookEvent, pass_env: list[str]
    ) -> str:
        env = command_environment(os.environ, pass_env)
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


# What a command hook inherits from syncd's environment: enough to run a program, never the
# credentials syncd holds (AWS keys, MLflow tokens, the Domino key, webhook secrets) unless
# the hook names them in `pass_env`.
COMMAND_BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def command_environment(environ: Mapping[str, str], pass_env: list[str]) -> dict[str, str]:
    """The base variables and those the hook names, as syncd has them."""
    return {name: environ[name] for name in (*COMMAND_BASE_ENV, *pass_env) if name in environ}


def _raise_for(status: int, what: str) -> None:
    if status == 429 or status >= 500:
        raise _Retry(f"{what}: HTTP {status}")
    if status >= 400:
        raise HookError(f"{what}: HTTP {status}")
