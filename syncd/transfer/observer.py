"""What the transfer engine reports while it works; `metrics.Metrics` implements it."""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullObserver", "TransferObserver"]


class TransferObserver(Protocol):
    """What the engine reports while it works (metrics implement it)."""

    def bytes_downloaded(self, count: int) -> None: ...

    def request_retried(self, reason: str) -> None: ...

    def checksum_failed(self, path: str) -> None: ...

    def in_flight(self, delta: int) -> None: ...


class NullObserver:
    """An observer that records nothing."""

    def bytes_downloaded(self, count: int) -> None:
        pass

    def request_retried(self, reason: str) -> None:
        pass

    def checksum_failed(self, path: str) -> None:
        pass

    def in_flight(self, delta: int) -> None:
        pass
