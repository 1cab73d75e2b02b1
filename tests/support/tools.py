"""Debian-packaged peers the tests run for real (promtool, prometheus, chromium)."""

from __future__ import annotations

import os
import shutil

import pytest


def need(binary: str) -> str:
    """The path of a Debian-packaged tool; CI must have it (its .ci/run installs it)."""
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is not installed: .ci/run installs it with apt-get")
        pytest.skip(f"{binary} not installed (apt-get install prometheus chromium)")
    return path
