"""The real `syncd` command, as a process: its arguments and a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WAIT = 120.0  # a generous upper bound for a command or a wait loop; never a timed assertion


def sync_command(model: str, root: Path, *extra: str) -> list[str]:
    """`python -m syncd sync --model M --alias production --root R --no-progress ...`."""
    return [
        sys.executable,
        "-m",
        "syncd",
        "sync",
        "--model",
        model,
        "--alias",
        "production",
        "--root",
        str(root),
        "--no-progress",
        *extra,
    ]


def clean_env(**overrides: str) -> dict[str, str]:
    """This environment without any SYNCD_ setting of the test run's, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(overrides)
    return env


def run_syncd(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m syncd ARGS` as a process, its output captured as text, never raising."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def run_sync(
    model: str, root: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    """`syncd sync --model M --alias production --root R --no-progress ...` as a process."""
    return run_syncd(*sync_command(model, root, *extra)[3:], env=env)
