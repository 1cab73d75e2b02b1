"""`domino_restart`: stop the Domino Model API serving the model, then start it again, so it
loads the folder now in place; an endpoint syncd stopped is never left stopped quietly."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from syncd.errors import HookError
from syncd.reconcile.hooks.event import HookEvent, HookResult, Retry
from syncd.reconcile.hooks.retry import HookRetry
from syncd.remote.domino import Deployment, DominoApi, DominoBusyError
from syncd.settings import DominoRestartHook, DominoSettings

__all__ = ["DominoRestart"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class DominoRestart:
    """Stop, wait for stopped, start, wait for Running: each step retried on its own, so a
    failed start is retried as a start and never by stopping again."""

    kind = "domino_restart"

    def __init__(
        self, restart: DominoRestartHook, domino: DominoSettings, retry: HookRetry
    ) -> None:
        self._restart = restart
        self._domino = domino
        self._retry = retry

    def applies_to(self, event: HookEvent) -> bool:
        return self._restart.model == event.model  # only the endpoint mapped to this model

    async def run(self, event: HookEvent) -> HookResult:
        result = await self._run()
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

    async def _run(self) -> HookResult:
        restart = self._restart
        model = restart.model_id
        project = restart.project_id or self._domino.project_id
        stopped_ours = False
        version = restart.model_version_id or "?"
        try:
            async with DominoApi(self._domino) as api:
                if restart.model_version_id is None:
                    assert project is not None  # settings refuse a hook without either
                    version = await self._step(
                        "look up the active version", lambda: api.active_version(model, project)
                    )
                where = f"Domino model {model}/{version}"
                await self._step(f"stop {where}", lambda: api.stop(model, version))
                stopped_ours = True
                state = await _until(
                    api, model, version, lambda d: d.stopped, restart.stop_timeout, restart
                )
                if not state.stopped:
                    log.warning(
                        "%s still %s after %.0fs; starting it anyway",
                        where,
                        state,
                        restart.stop_timeout,
                    )
                return await self._start(api, version)
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

    async def _start(self, api: DominoApi, version: str) -> HookResult:
        """Start the endpoint syncd stopped and wait for Running; a start that fails (refused,
        or a build that ends Failed) is retried as a start."""
        restart = self._restart
        model = restart.model_id
        where = f"Domino model {model}/{version}"

        async def start() -> Deployment:
            await api.start(model, version)
            state = await _until(
                api, model, version, lambda d: d.running, restart.start_timeout, restart, True
            )
            if not state.running:
                raise Retry(f"{where} is {state} after the start")
            return state

        try:
            state = await self._retry.run(f"start {where}", start, (Retry, DominoBusyError))
        except (Retry, DominoBusyError) as exc:
            last = f"{self._retry.attempts} start attempts failed: {exc}"
        except HookError as exc:
            last = str(exc)
        else:
            return _result(
                "success",
                f"{where} stopped and started: {state} (auth: {api.auth})",
                self._retry.tried,
                f"{model}/{version}",
            )
        return _result(
            "error",
            f"{where} LEFT STOPPED: {last}",
            self._retry.tried,
            f"{model}/{version}",
            stopped=True,
        )

    async def _step(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """One Domino call, retried while Domino is busy."""
        try:
            return await self._retry.run(what, step, (DominoBusyError,))
        except DominoBusyError as exc:
            raise HookError(f"cannot {what}: {exc}") from exc


async def _until(
    api: DominoApi,
    model: str,
    version: str,
    done: Callable[[Deployment], bool],
    limit: float,
    restart: DominoRestartHook,
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
        await asyncio.sleep(restart.poll_interval)


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
