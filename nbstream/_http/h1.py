"""nbstream's own HTTP/1.1 client, for its streaming POSTs: keep-alive connections on
asyncio protocols, a pool per origin kept as a free list, and a ``Response`` whose body
is the de-chunked network reads as they come.

Why: below nbstream's own work, httpx2 → httpcore2 → h11 + anyio cost ~11 µs a chunk of
a stream and ~3 ms of a short request on this project's machine, against ~1 µs and
~0.3 ms for the same bytes handled here (bench/README.md). ``transport`` chooses this
client unless something needs httpx2 (a proxy, record/replay, ``Client(http=...)``).

- A connection serves one request at a time (no pipelining) and goes back to its
  origin's free list only when its answer was read to the end, it did not say
  ``Connection: close`` and nothing followed the body. Idle ones are reused newest
  first and closed after ``KEEPALIVE_S`` (httpx2's default).
- A request sent on a reused connection that closes before any byte of an answer is
  sent once more on a new connection (the server closed it while it was idle: the
  usual rule of HTTP clients).
- TLS is asyncio's, with the context ``transport`` gives (httpx2's: certificates
  verified, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), SNI and ALPN http/1.1.
- Stop cancels the reading task; ``aclose`` of an unfinished body then aborts the
  socket at once (the server sees it close), never waits for it.
- Everything the server sends goes through ``h1parse``'s limits; a malformed answer is
  ``TransportFailure("protocol", …)`` and its connection is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from .h1parse import MAX_HEAD, Dechunker, Head, find_head_end, parse_head, request_head
from .h1pool import Conn, Origin, Pool
from .request import encode_body
from .response import Response, TransportFailure
from .settings import Timeouts

__all__ = ["H1", "H1Response"]

log = logging.getLogger("nbstream.http")


class _Unanswered(Exception):
    """The connection closed before any byte of an answer came."""


# -- reading an answer ----------------------------------------------------------------


async def _read_head(conn: Conn) -> tuple[Head, bytes]:
    """The final head of an answer (1xx answers skipped) and the bytes after it."""
    data = await conn.read()
    if data:
        end = find_head_end(data, 0)
        if 0 < end <= MAX_HEAD and data[9:10] != b"1":  # the whole head in one read
            return parse_head(data[:end]), data[end:]
    buf = bytearray(data)
    scanned = used = 0
    while True:
        if not data:
            if not conn.received:
                raise _Unanswered
            raise TransportFailure(
                "protocol",
                f"the server closed the connection in the middle of the answer's head"
                f"{conn.why_closed()}",
            )
        end = find_head_end(buf, scanned - 3)
        if end < 0:
            if used + len(buf) > MAX_HEAD:
                raise TransportFailure(
                    "protocol",
                    f"the answer's header block is larger than {MAX_HEAD // 1024} KiB",
                )
            scanned = len(buf)
            data = await conn.read()
            buf += data
            continue
        used += end
        if used > MAX_HEAD:
            raise TransportFailure(
                "protocol",
                f"the answer's header block is larger than {MAX_HEAD // 1024} KiB",
            )
        head = parse_head(bytes(buf[:end]))
        del buf[:end]
        scanned = 0
        if head.status >= 200:
            return head, bytes(buf)
        if head.status == 101:
            raise TransportFailure(
                "protocol", "the server switched protocols (101) without being asked"
            )
        if not buf:  # 1xx: an interim answer; the final one follows
            data = await conn.read()
            buf += data


class _Body:
    """The body's pieces as they come (de-chunked when chunked); the end is told by
    its framing, and a server that closes before it is a ``TransportFailure``."""

    __slots__ = ("conn", "dechunk", "done", "framing", "left", "pending", "pieces")

    def __init__(self, conn: Conn, head: Head, pending: bytes) -> None:
        self.conn = conn
        self.framing = head.framing
        self.left = head.length
        self.pending = pending
        self.pieces: deque[bytes] = deque()  # chunks of the last read, not yet out
        self.dechunk = Dechunker() if head.framing == "chunked" else None
        self.done = head.framing == "length" and not head.length
        if self.done and pending:
            conn.reusable = False  # bytes after an empty body

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if self.pieces:
            return self.pieces.popleft()
        while not self.done:
            if self.dechunk is not None and self.dechunk.error is not None:
                self.conn.reusable = False
                raise self.dechunk.error  # after the good chunks before it
            if self.pending:
                data, self.pending = self.pending, b""
            else:
                data = await self.conn.read()
            if not data:
                if self.framing == "close":
                    self.done = True
                    break
                self.conn.reusable = False
                what = (
                    "the last chunk was due"
                    if self.dechunk
                    else f"{self.left} more bytes were due"
                )
                raise TransportFailure(
                    "broken",
                    f"the server closed the connection before the end of the body "
                    f"({what}){self.conn.why_closed()}",
                )
            dechunk = self.dechunk
            if dechunk is not None:
                try:
                    out = dechunk.feed(data)
                except TransportFailure:
                    self.conn.reusable = False
                    raise
                if dechunk.done:
                    self.done = True
                    if dechunk.rest:
                        self.conn.reusable = False  # bytes after the end: no reuse
                if out:
                    if len(out) == 1:
                        return out[0]
                    self.pieces.extend(out)
                    return self.pieces.popleft()
            elif self.framing == "length":
                if len(data) >= self.left:
                    if len(data) > self.left:
                        self.conn.reusable = False
                        data = data[: self.left]
                    self.left = 0
                    self.done = True
                else:
                    self.left -= len(data)
                if data:
                    return data
            else:
                return data
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Nothing to do: the response returns or closes the connection."""


class H1Response(Response):
    """An answer read by ``H1``; closing it returns its connection to the pool when
    the body was read to its end, and aborts the connection otherwise."""

    __slots__ = ("_body", "_conn", "_pool")

    def __init__(
        self,
        head: Head,
        conn: Conn,
        pool: Pool,
        pending: bytes,
        drains: set[asyncio.Task[None]],
    ) -> None:
        super().__init__(head.status, head.reason, head.headers, drains)
        self._conn: Conn | None = conn
        self._pool = pool
        self._body = _Body(conn, head, pending)
        if not head.reusable:
            conn.reusable = False

    def _raw(self) -> AsyncIterator[bytes]:
        return self._body

    async def aclose(self) -> None:
        self._finish()

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._body.done and conn.reusable and not conn.buf:
            self._pool.put(conn)
        else:
            conn.abort()

    def release(self, chunks: AsyncIterator[bytes]) -> None:
        if chunks is self._body and self._body.done and not self._body.pieces:
            self._finish()  # read to its end already: nothing to drain
        else:
            super().release(chunks)


# -- the client -----------------------------------------------------------------------


class _Target:
    __slots__ = ("host", "origin", "path")

    def __init__(self, origin: Origin, host: str, path: str) -> None:
        self.origin, self.host, self.path = origin, host, path


def _target(url: str) -> _Target:
    """Where ``url`` goes: its origin, ``Host`` header and request target."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TransportFailure("connect", f"the URL is not valid ({exc})") from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise TransportFailure("connect", "the URL is not an http(s) URL with a host")
    if not host.isascii() or parts.username is not None:
        raise TransportFailure(
            "connect",
            "the URL has a non-ASCII host or a user name, which nbstream's HTTP/1.1 "
            "client does not handle: use Client(http='httpx2')",
        )
    default = 443 if scheme == "https" else 80
    port = port or default
    name = f"[{host}]" if ":" in host else host
    hostport = name if port == default else f"{name}:{port}"
    safe = "/%:@!$&'()*+,;=-._~"
    path = quote(parts.path or "/", safe=safe)
    if parts.query:
        path += "?" + quote(parts.query, safe=safe + "?")
    return _Target((scheme, host, port), hostport, path)


class H1:
    """The HTTP/1.1 connections of one client on one event loop."""

    def __init__(
        self,
        timeouts: Timeouts,
        *,
        max_connections: int | None,
        ssl_context: Callable[[], ssl.SSLContext],
        drains: set[asyncio.Task[None]],
    ) -> None:
        self._pool = Pool(timeouts, max_connections, ssl_context)
        self._write_timeout = timeouts.idle
        self._drains = drains
        self._targets: dict[str, _Target] = {}

    async def send(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> H1Response:
        target = self._targets.get(url)
        if target is None:
            target = _target(url)
            if len(self._targets) < 64:
                self._targets[url] = target
        payload = encode_body(body)
        head, close = request_head(target.path, target.host, headers, len(payload))
        data = head + payload
        pool = self._pool
        fresh = False
        while True:
            conn = await pool.acquire(target.origin, fresh=fresh)
            reused = conn.requests > 0
            conn.start()
            try:
                await conn.write(data, self._write_timeout)
                answer, pending = await _read_head(conn)
            except _Unanswered:
                conn.abort()
                if reused and not fresh:  # closed while idle: once more, anew
                    log.debug("a kept-alive connection had closed; sending again")
                    fresh = True
                    continue
                raise TransportFailure(
                    "protocol",
                    "RemoteProtocolError: the server closed the connection without "
                    f"answering{conn.why_closed()}",
                ) from None
            except BaseException:
                conn.abort()
                raise
            if close:
                conn.reusable = False
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "POST %s: %d %s %s",
                    url,
                    answer.status,
                    answer.reason,
                    answer.headers,
                )
            return H1Response(answer, conn, pool, pending, self._drains)

    def close(self) -> None:
        self._pool.close()
