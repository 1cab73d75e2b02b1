"""Small artifacts read whole into memory (`model_context.json`): bounded, whatever a run holds."""

from __future__ import annotations

from syncd.errors import SourceError

__all__ = ["SMALL_FILE_LIMIT", "too_large"]

# model_context.json is a few hundred bytes; a run can hold a 60 MB one (or a 5 GB one named
# so), which read whole would take the daemon past its memory limit.
SMALL_FILE_LIMIT = 1 << 20


def too_large(uri: str, size: int | None = None) -> SourceError:
    said = f"{size} bytes" if size is not None else "more than 1 MiB"
    return SourceError(f"{uri} is {said}: refused (a small JSON document is read whole, <= 1 MiB)")
