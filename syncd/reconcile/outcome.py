"""What one sync is doing (its live counters) and what it did (its outcome)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from syncd.core.manifest import Manifest
from syncd.core.reuse import reused_said

__all__ = ["SyncOutcome", "SyncProgress"]


@dataclass
class SyncProgress:
    """Live counters of one sync, read by the progress bar and the status page."""

    total_bytes: int = 0
    done_bytes: int = 0
    total_files: int = 0
    done_files: int = 0
    started: float = field(default_factory=time.monotonic)
    listeners: list[Callable[[int], None]] = field(default_factory=list)

    def add(self, count: int) -> None:
        self.done_bytes += count
        for listener in self.listeners:
            listener(count)


@dataclass(frozen=True)
class SyncOutcome:
    """What ensure() did for one run folder."""

    result: Literal["noop", "synced"]
    run_id: str
    downloaded_files: int
    downloaded_bytes: int
    reused_files: int
    manifest: Manifest
    # paths of a folder synced before that were rebuilt, and why (missing_file, size, ...)
    healed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the whole ensure(), set by the caller that timed it
    patched_files: int = 0  # of downloaded_files, those repaired range by range (not whole)
    # taken from other run folders by strong identity, not downloaded
    shared_files: int = 0
    shared_bytes: int = 0
    shared_from: tuple[str, ...] = ()

    @property
    def reused_said(self) -> str:
        said = reused_said(self.shared_files, self.shared_bytes, self.shared_from)
        return f", {said}" if said else ""
