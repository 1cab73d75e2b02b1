"""HTTPS for the pump threads with TLS over memory BIOs: one `recv` per many TLS records.

`ssl.SSLSocket` hands out one TLS record (at most 16 KiB) per read, and each read costs two
`recv` calls (the record's header, then its body), three Python frames (`SocketIO.readinto`,
`SSLSocket.recv_into`, `SSLSocket.read`) and a hand-off of the GIL. With 16 pump threads
that adds up: over TLS, `perf` put half of a size-only download's CPU in the kernel, most of it
in futex wake-ups and in the ACKs each small `recv` sends, and another quarter in the
interpreter. Here the socket is read plainly, as much as it holds (up to `_RECEIVE_SIZE`) in
one `recv`, into an `ssl.MemoryBIO`, and `SSLObject.read` decrypts record after record from
memory: the same OpenSSL, context and certificate checks, a fraction of the system calls.
asyncio's own TLS (`sslproto`) is built the same way.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
from typing import Any, cast

__all__ = ["MemoryTlsConnection"]

_RECEIVE_SIZE = 256 * 1024  # one recv's most: enough for 16 records, small per thread


class _TlsSocket:
    """The little of a socket that `http.client` uses (`sendall`, `makefile`, `close`),
    plus `shutdown` for `Abort`: TLS over `sock` through memory BIOs."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, hostname: str) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=hostname)
        self._received = bytearray(_RECEIVE_SIZE)
        self._received_view = memoryview(self._received)
        self._handshake()

    def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                if not self._receive():
                    raise ConnectionResetError("TLS handshake: connection closed") from None

    def _flush(self) -> None:
        """Whatever OpenSSL has to say (handshake, request bytes, key updates) to the wire."""
        if self._outgoing.pending:
            self._sock.sendall(self._outgoing.read())

    def _receive(self) -> bool:
        """One `recv` into the incoming BIO; False at the end of the stream."""
        count = self._sock.recv_into(self._received)
        if not count:
            self._incoming.write_eof()
            return False
        self._incoming.write(self._received_view[:count])
        return True

    def sendall(self, data: Any) -> None:
        view = memoryview(data)
        while view:
            written = self._tls.write(view)
            view = view[written:]
            self._flush()

    def readinto(self, buffer: Any) -> int:
        """Plaintext into `buffer`: what one record (or what is left of one) holds; 0 at the
        end of the stream."""
        while True:
            try:
                # With a buffer given, read returns a count (typeshed says bytes).
                count = cast(int, self._tls.read(len(buffer), buffer))
            except ssl.SSLWantReadError:
                self._flush()  # a TLS 1.3 key update asks for an answer
                if not self._receive():
                    return 0
                continue
            except ssl.SSLZeroReturnError:  # close_notify
                return 0
            except ssl.SSLEOFError:
                # The peer closed without close_notify: the caller counts the body's bytes,
                # so a cut shows there as a short body.
                return 0
            return count

    def makefile(self, mode: str = "rb", buffering: int | None = None) -> io.BufferedReader:
        assert mode == "rb", mode
        return io.BufferedReader(_Plaintext(self), buffer_size=buffering or io.DEFAULT_BUFFER_SIZE)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


class _Plaintext(io.RawIOBase):
    """The decrypted stream as a raw file for `io.BufferedReader`; closing it leaves the
    connection open, as closing a socket's `makefile` does."""

    def __init__(self, tls: _TlsSocket) -> None:
        self._tls = tls

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._tls.readinto(buffer)


class MemoryTlsConnection(http.client.HTTPConnection):
    """`http.client.HTTPSConnection`, its TLS over memory BIOs (`_TlsSocket`)."""

    default_port = http.client.HTTPS_PORT

    def __init__(self, host: str, *, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, timeout=timeout)
        self._context = context

    def connect(self) -> None:
        super().connect()  # TCP, with the timeout and TCP_NODELAY
        plain = self.sock
        try:
            self.sock = _TlsSocket(plain, self._context, self.host)
        except BaseException:
            plain.close()
            raise
