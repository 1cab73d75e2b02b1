"""`command`: run a program with the facts of the folder in place, and only those secrets
the hook names."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from syncd.errors import HookError
from syncd.reconcile.hooks.event import HookEvent, Retry

__all__ = ["COMMAND_BASE_ENV", "Command", "command_environment"]

log = logging.getLogger(__name__)

_OUTPUT_LIMIT = 4000  # characters of a command's output kept for the log

# What a command hook inherits from syncd's environment: enough to run a program, never the
# credentials syncd holds (AWS keys, MLflow tokens, the Domino key, webhook secrets) unless
# the hook names them in `pass_env`.
COMMAND_BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def command_environment(environ: Mapping[str, str], pass_env: list[str]) -> dict[str, str]:
    """The base variables and those the hook names, as syncd has them."""
    return {name: environ[name] for name in (*COMMAND_BASE_ENV, *pass_env) if name in environ}


class Command:
    """One run of the program: Retry for a non-zero exit or the time limit, HookError when
    it cannot be started at all."""

    def __init__(self, command: list[str], limit: float, pass_env: list[str]) -> None:
        self._command = command
        self._limit = limit
        self._pass_env = pass_env

    async def attempt(self, event: HookEvent) -> str:
        command, limit = self._command, self._limit
        env = command_environment(os.environ, self._pass_env)
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
            raise Retry(f"{command[0]} did not finish within {limit:.0f}s") from None
        text = output.decode(errors="replace").strip()[-_OUTPUT_LIMIT:]
        if text:
            log.info("%s: output of %s: %s", event.target, command[0], text)
        if process.returncode != 0:
            raise Retry(f"{command[0]} exited with {process.returncode}: {text[-300:]}")
        return f"{command[0]} exited 0"
