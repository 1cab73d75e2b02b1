"""A real HTTP proxy in front of a real store server (moto, `rclone serve s3`, Azurite,
gcp-storage-emulator) that counts requests and body bytes and injects faults into object GETs.

The servers never corrupt or drop anything; this sits between syncd and them so that tests
can see how syncd handles a flipped byte, a 5xx, a cut connection or a slow link, while
every request still reaches a real implementation. The faults it makes up answer as S3 does
(Amazon S3 API Reference, "Error responses": 503 with an XML `<Code>SlowDown</Code>` body,
429, 400 `AuthorizationHeaderMalformed` for a presigned URL of the wrong region); anything
it forwards is sent as the client sent it (no body added to a bodiless request: Azure's
shared-key signature covers Content-Type).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from syncd.app.embedded import free_port

_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class Faults:
    """What to do to GETs whose path contains a given substring; counts decrease as used."""

    corrupt: dict[str, int] = field(default_factory=dict)
    server_error: dict[str, int] = field(default_factory=dict)
    too_many_requests: dict[str, int] = field(default_factory=dict)  # 429, no S3 error body
    truncate: dict[str, int] = field(default_factory=dict)
    delay_seconds: float = 0.0
    slow: dict[str, float] = field(default_factory=dict)  # path substring -> delay per 64 KiB
    # Refuse query-signed (presigned) GETs as S3 does a URL signed for another region.
    refuse_presigned: dict[str, int] = field(default_factory=dict)
    gets: Counter[str] = field(default_factory=Counter)
    # every request forwarded, as "METHOD /path" (listings: "GET /bucket?list"); the proxy is a
    # plain forwarder, so it also counts what a client asks of an MLflow server behind it
    requests: Counter[str] = field(default_factory=Counter)
    ranges: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header) of GETs
    # object GETs by how they were signed and what they asked for: "presigned" (signature in
    # the query), "header" (Authorization header), and "checksum-mode" (x-amz-checksum-mode)
    get_kinds: Counter[str] = field(default_factory=Counter)
    body_bytes: Counter[str] = field(default_factory=Counter)  # object GET bytes sent, by path

    def take(self, table: dict[str, int], path: str) -> bool:
        for needle, remaining in table.items():
            if needle in path and remaining != 0:
                table[needle] = remaining - 1
                return True
        return False

    def reset(self) -> None:
        self.corrupt.clear()
        self.server_error.clear()
        self.too_many_requests.clear()
        self.truncate.clear()
        self.delay_seconds = 0.0
        self.slow.clear()
        self.refuse_presigned.clear()
        self.gets.clear()
        self.ranges.clear()
        self.get_kinds.clear()
        self.requests.clear()
        self.body_bytes.clear()


class FaultyS3Proxy:
    """Forwards everything to `upstream`; applies `faults` to object GETs. With `tls` (a
    certificate and its key) it serves HTTPS, as real S3 does. `keep_host`: the client's Host
    header goes upstream as sent, for servers that check signatures (moto does not)."""

    def __init__(
        self, upstream: str, tls: tuple[Path, Path] | None = None, *, keep_host: bool = False
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self._keep_host = keep_host
        self.port = free_port()
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(*tls)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.faults = Faults()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._tls).start()

    async def _stop(self) -> None:
        assert self._runner is not None
        assert self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        if self._keep_host and request.host:
            headers["Host"] = request.host
        body = await request.read()
        path = request.path
        is_object_get = (
            request.method == "GET" and path.count("/") >= 2 and not request.query.get("list-type")
        )
        listing = "?list" if request.query.get("list-type") else ""
        self.faults.requests[f"{request.method} {path}{listing}"] += 1
        if is_object_get:
            self.faults.gets[path] += 1
            self.faults.ranges.append((path, request.headers.get("Range", "")))
            signed = "presigned" if "X-Amz-Signature" in request.query else "header"
            self.faults.get_kinds[signed] += 1
            if request.headers.get("x-amz-checksum-mode"):
                self.faults.get_kinds["checksum-mode"] += 1
            if "X-Amz-Signature" in request.query and self.faults.take(
                self.faults.refuse_presigned, path
            ):
                return web.Response(
                    status=400,
                    body=b"<Error><Code>AuthorizationHeaderMalformed</Code>"
                    b"<Message>the region 'us-east-1' is wrong</Message></Error>",
                    content_type="application/xml",
                )
            if self.faults.take(self.faults.too_many_requests, path):
                return web.Response(status=429, text="Too Many Requests")
            if self.faults.take(self.faults.server_error, path):
                return web.Response(
                    status=503,
                    body=b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>",
                    content_type="application/xml",
                )
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            # No body, none sent: aiohttp would add a Content-Type to b"", which Azure's
            # shared-key signature covers.
            data=body or None,
        ) as upstream:
            payload = await upstream.read()
            out_headers = {
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS
            }
            status = upstream.status
            length = upstream.headers.get("Content-Length")
        if request.method == "HEAD":
            # aiohttp would answer a bodyless response with Content-Length: 0; S3 clients
            # read the object size from it.
            response = web.StreamResponse(status=status, headers=out_headers)
            if length is not None:
                response.content_length = int(length)
            await response.prepare(request)
            await response.write_eof()
            return response
        if is_object_get and status in (200, 206) and payload:
            self.faults.body_bytes[path] += len(payload)
            if self.faults.take(self.faults.corrupt, path):
                flipped = bytearray(payload)
                flipped[len(flipped) // 2] ^= 0xFF
                payload = bytes(flipped)
            if self.faults.take(self.faults.truncate, path):
                response = web.StreamResponse(status=status, headers=out_headers)
                response.content_length = len(payload)
                await response.prepare(request)
                await response.write(payload[: len(payload) // 2])
                assert request.transport is not None
                request.transport.close()
                return response
            delay = self.faults.delay_seconds or next(
                (seconds for needle, seconds in self.faults.slow.items() if needle in path), 0.0
            )
            if delay:
                response = web.StreamResponse(status=status, headers=out_headers)
                response.content_length = len(payload)
                await response.prepare(request)
                step = 64 * 1024
                for start in range(0, len(payload), step):
                    await asyncio.sleep(delay)
                    await response.write(payload[start : start + step])
                await response.write_eof()
                return response
        return web.Response(status=status, body=payload, headers=out_headers)
