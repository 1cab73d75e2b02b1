"""Checks on the names that become paths: run ids and object keys."""

from __future__ import annotations

import re
import unicodedata

from syncd.errors import UnsafeKeyError

__all__ = ["RUN_ID", "is_run_id", "safe_relative_path"]

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def is_run_id(value: object) -> bool:
    """True for an MLflow run id: exactly 32 lowercase hex characters."""
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None


def safe_relative_path(key: str) -> str:
    """The key as a relative path that stays inside its folder; raise UnsafeKeyError otherwise.

    S3 keys are arbitrary strings, and a listing is untrusted input: `..`, absolute paths,
    backslashes (a path separator to some tools), empty segments and control characters could
    each place a file somewhere other than where the manifest says it is.
    """
    if not key:
        raise UnsafeKeyError(key, "empty key")
    if key.startswith("/"):
        raise UnsafeKeyError(key, "absolute path")
    if "\\" in key:
        raise UnsafeKeyError(key, "backslash in key")
    if any(unicodedata.category(char) == "Cc" for char in key):
        raise UnsafeKeyError(key, "control character in key")
    parts = key.split("/")
    for part in parts:
        if part in ("", "."):
            raise UnsafeKeyError(key, "empty or '.' path segment")
        if part == "..":
            raise UnsafeKeyError(key, "'..' path segment")
        if len(part.encode()) > 255:
            raise UnsafeKeyError(key, "path segment longer than 255 bytes")
    if parts[0] == ".syncd":
        raise UnsafeKeyError(key, "reserved name .syncd")
    return key
