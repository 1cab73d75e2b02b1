"""The daemon's HTTP port, guarded: a cap on open connections and a time limit on a request's
head, so that whoever can reach the port cannot take the daemon's file descriptors.

aiohttp serves the requests; this wraps each connection's protocol on its way in. A
connection over the cap is closed at once (the daemon keeps its descriptors for S3 and the
dataset); one that has not sent a whole request head within `head_timeout` seconds is
closed (a slowloris client, or 1,030 idle sockets). After the first request aiohttp's own
keep-alive timeout closes idle connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConnectionGuard", "GuardedServer", "start_guarded"]

log = logging.getLogger(__name__)

_HEAD_END = b"\r\n\r\n"
_REFUSED_LOG_EVERY = 60.0


@dataclass
class ConnectionGuard:
    """What the port allows, and what it has seen (read by tests and the metrics)."""

    max_connections: int = 256
    head_timeout: float = 30.0
    open: int = 0
    refused: int = 0
    timed_out: int = 0
    _refused_line_at: float | None = field(default=None, repr=False)

    def refuse(self) -> None:
        self.refused += 1
        now = time.monotonic()
        if self._refused_line_at is None or now - self._refused_line_at >= _REFUSED_LOG_EVERY:
            self._refused_line_at = now
            log.warning(
                "HTTP: %d connections open, the most allowed: closing new ones (%d refused so far)",
                self.open,
                self.refused,
            )


class _GuardedProtocol(asyncio.Protocol):
    """Passes everything to aiohttp's protocol, counting the connection and timing its head."""

    def __init__(self, inner: Any, guard: ConnectionGuard, loop: asyncio.AbstractEventLoop):
        self._inner = inner
        self._guard = guard
        self._loop = loop
        self._counted = False
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._guard.open >= self._guard.max_connections:
            self._guard.refuse()
            transport.abort()
            return
        self._guard.open += 1
        self._counted = True
        self._timer = self._loop.call_later(self._guard.head_timeout, self._head_too_slow)
        self._inner.connection_made(transport)

    def _head_too_slow(self) -> None:
        self._timer = None
        self._guard.timed_out += 1
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if _HEAD_END in seen:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted:
            self._counted = False
            self._guard.open -= 1
            self._inner.connection_lost(exc)


@dataclass
class GuardedServer:
    """A listening socket serving an aiohttp runner through the guard."""

    server: asyncio.Server
    guard: ConnectionGuard
    _cleanup: Callable[[], Any]

    @property
    def addresses(self) -> list[Any]:
        return [sock.getsockname() for sock in self.server.sockets]

    async def cleanup(self) -> None:
        self.server.close()
        await self._cleanup()


async def start_guarded(
    factory: Callable[[], Any],
    cleanup: Callable[[], Any],
    host: str,
    port: int,
    guard: ConnectionGuard,
) -> GuardedServer:
    """Listen on host:port; every connection goes through `guard` to `factory()`'s protocol."""
    loop = asyncio.get_running_loop()

    def protocol() -> asyncio.Protocol:
        return _GuardedProtocol(factory(), guard, loop)

    server = await loop.create_server(
        protocol, host, port, family=socket.AF_UNSPEC, reuse_address=True, backlog=128
    )
    return GuardedServer(server, guard, cleanup)
