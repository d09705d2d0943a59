"""The connections of nbstream's HTTP/1.1 client (``h1``): one asyncio protocol a
connection, and a pool that keeps the idle ones in a free list per origin.

A connection buffers what the server sends while a request is in flight and wakes its
reader; bytes (or a close) while it is idle retire it. The pool hands out the newest
idle connection of an origin (no scan), opens one when none is idle, and, with
``max_connections``, makes a request wait at most the pool timeout for one; a
connection comes back only through ``put``, when its answer was read to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable

from .response import TransportFailure
from .settings import Timeouts

__all__ = ["KEEPALIVE_S", "MAX_IDLE", "Conn", "Origin", "Pool"]

log = logging.getLogger("nbstream.http")

READ_SIZE = 64 * 1024  # the most one socket read takes (asyncio's own reads: 256 KiB)
HIGH_WATER = 256 * 1024  # body bytes held before the socket is no longer read
KEEPALIVE_S = 5.0  # an idle connection older than this is closed, not reused
MAX_IDLE = 128  # idle connections kept per origin
HAPPY_EYEBALLS_S = 0.25  # as anyio (httpx2) connects to several addresses
SSL_SHUTDOWN_S = 2.0  # closing an idle TLS connection politely, at most this long

Origin = tuple[str, str, int]  # scheme, host, port


class Conn(asyncio.BufferedProtocol):
    """One connection: buffers what the server sends while a request is in flight and
    wakes the reader; anything it sends in between makes the connection unusable.

    The socket is read into one buffer of the pool's (``READ_SIZE``) and each read
    copied out at once, so a read holds 64 KiB at most: asyncio's own reads allocate
    256 KiB each, which was most of a stream's peak memory (bench/engine.py)."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf: deque[bytes] = deque()
        self.size = 0
        self.waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self.paused = False
        self.eof = False
        self.error: BaseException | None = None
        self.busy = True  # a request is in flight (a new connection is for one)
        self.received = 0  # bytes of the current answer so far
        self.requests = 0
        self.idle_since = 0.0
        self.reusable = True
        self.closed = False
        self.dropped = False

    # -- asyncio's callbacks ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.pool.view  # shared: each read is copied out before the next one

    def buffer_updated(self, nbytes: int) -> None:
        self._received(bytes(self.pool.view[:nbytes]))

    def _received(self, data: bytes) -> None:
        if not self.busy:  # nothing was asked: a server that talks out of turn
            self.abort()
            return
        self.buf.append(data)
        self.size += len(data)
        self.received += len(data)
        if self.size > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self.reusable = False
        self._wake()
        if not self.busy:
            self.abort()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self.closed = True
        self.reusable = False
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()
        w = self.write_waiter
        if w is not None and not w.done():
            w.set_result(None)
        self.drop()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        w = self.write_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- used by the client ----------------------------------------------------------
    def start(self) -> None:
        """A request goes out on this connection."""
        self.busy = True
        self.received = 0
        self.requests += 1

    async def write(self, data: bytes, timeout: float | None) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the read that follows finds it closed
        transport.write(data)
        if not self.write_paused or self.closed:
            return
        w = self.write_waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await w
        except TimeoutError:
            raise TransportFailure(
                "broken", f"the server took none of the request for {timeout:g} s"
            ) from None
        finally:
            self.write_waiter = None

    async def read(self) -> bytes:
        """The next read of what the server sent; b"" once it closed."""
        if not self.buf:
            if self.eof:
                return b""
            w = self.waiter = self.loop.create_future()
            try:
                await w
            finally:
                self.waiter = None
            if not self.buf:
                return b""
        data = self.buf.popleft()  # one read at a time: no joining, no copy
        self.size -= len(data)
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def why_closed(self) -> str:
        e = self.error
        return f" ({type(e).__name__}: {e})" if e is not None else ""

    def close(self) -> None:
        """Close politely (an idle connection)."""
        self.reusable = False
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.drop()

    def abort(self) -> None:
        """Close at once, whatever is in flight."""
        self.reusable = False
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.drop()

    def drop(self) -> None:
        if not self.dropped:
            self.dropped = True
            self.pool.dropped(self)


class Pool:
    """Connections by origin. Idle ones wait in a free list each; ``max_connections``
    caps open ones, and a request that finds none free waits ``pool`` seconds."""

    def __init__(
        self,
        timeouts: Timeouts,
        max_connections: int | None,
        ssl_context: Callable[[], ssl.SSLContext],
    ) -> None:
        self.connect_timeout = timeouts.connect
        self.pool_timeout = timeouts.connect
        self.max = max_connections
        self.ssl_context = ssl_context
        self.idle: dict[Origin, deque[Conn]] = {}
        self.count = 0  # connections open or opening
        self.conns: set[Conn] = set()
        self.waiters: deque[tuple[Origin, asyncio.Future[Conn | None]]] = deque()
        self.closed = False
        self.view = memoryview(bytearray(READ_SIZE))  # every connection reads here

    async def acquire(self, origin: Origin, *, fresh: bool = False) -> Conn:
        idle = self.idle.get(origin)
        if idle and not fresh:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if conn.closed or now - conn.idle_since > KEEPALIVE_S:
                    conn.close()
                    continue
                conn.busy = True
                return conn
        if self.max is not None and self.count >= self.max:
            self._evict(origin, fresh)
        if self.max is None or self.count < self.max:
            self.count += 1
            return await self._open(origin)
        return await self._wait(origin)

    def _evict(self, origin: Origin, fresh: bool) -> None:
        """At the limit: close an idle connection to another origin (or, for a fresh
        connection, one to this origin) to make room."""
        for o, idle in self.idle.items():
            if idle and (fresh or o != origin):
                idle.popleft().close()
                return

    async def _open(self, origin: Origin) -> Conn:
        """A new connection; the caller counted it already."""
        if self.closed:
            self._free_slot()
            raise TransportFailure("connect", "the client's connections were closed")
        scheme, host, port = origin
        conn = Conn(self, origin)
        try:
            ctx = self.ssl_context() if scheme == "https" else None
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=ctx,
                    server_hostname=host if ctx is not None else None,
                    ssl_shutdown_timeout=SSL_SHUTDOWN_S if ctx is not None else None,
                    happy_eyeballs_delay=HAPPY_EYEBALLS_S,
                )
        except TimeoutError:
            conn.abort()
            raise TransportFailure(
                "connect_timeout",
                f"ConnectTimeout: no connection to {host}:{port} within "
                f"{self.connect_timeout:g} s",
            ) from None
        except OSError as exc:  # refused, unreachable, no such host, TLS
            conn.abort()
            raise TransportFailure(
                "connect", f"ConnectError: {type(exc).__name__}: {exc}"
            ) from None
        except BaseException:
            conn.abort()
            raise
        self.conns.add(conn)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connected to %s://%s:%d", scheme, host, port)
        return conn

    async def _wait(self, origin: Origin) -> Conn:
        fut: asyncio.Future[Conn | None] = asyncio.get_running_loop().create_future()
        item = (origin, fut)
        self.waiters.append(item)
        try:
            async with asyncio.timeout(self.pool_timeout):
                conn = await fut
        except BaseException as exc:
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled():  # handed over just as the wait ended: pass on
                given = fut.result()
                if given is None:
                    self._free_slot()
                else:
                    self.put(given)
            if isinstance(exc, TimeoutError):
                raise TransportFailure(
                    "pool_timeout",
                    f"PoolTimeout: all {self.max} connections stayed busy for "
                    f"{self.pool_timeout:g} s",
                ) from None
            raise
        if conn is None:  # a slot came free (counted for us): open a connection
            return await self._open(origin)
        return conn

    def put(self, conn: Conn) -> None:
        """A connection whose answer was read to its end (the caller checked)."""
        conn.busy = False
        if self.closed or conn.closed or not conn.reusable:
            conn.abort()
            return
        while self.waiters:
            origin, fut = self.waiters.popleft()
            if fut.done():
                continue
            if origin == conn.origin:
                conn.busy = True
                fut.set_result(conn)
                return
            self.waiters.appendleft((origin, fut))
            conn.close()  # its slot goes to the one waiting for another origin
            return
        idle = self.idle.get(conn.origin)
        if idle is None:
            idle = self.idle[conn.origin] = deque()
        now = conn.idle_since = time.monotonic()
        while idle and (
            len(idle) >= MAX_IDLE or now - idle[0].idle_since > KEEPALIVE_S
        ):
            idle.popleft().close()
        idle.append(conn)

    def dropped(self, conn: Conn) -> None:
        """``conn`` is closed: forget it, and let a waiting request open another."""
        self.conns.discard(conn)
        idle = self.idle.get(conn.origin)
        if idle and not conn.busy:
            with contextlib.suppress(ValueError):
                idle.remove(conn)
        self.count -= 1
        self._free_slot(counted=False)

    def _free_slot(self, *, counted: bool = True) -> None:
        """A slot is free (``counted``: still counted for someone who gave it up):
        the first waiter gets it."""
        if counted:
            self.count -= 1
        while self.waiters:
            _origin, fut = self.waiters.popleft()
            if not fut.done():
                self.count += 1
                fut.set_result(None)
                return

    def close(self) -> None:
        self.closed = True
        for conn in list(self.conns):
            if conn.busy:
                conn.abort()
            else:
                conn.close()
        self.idle.clear()
        while self.waiters:
            _origin, fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(
                    TransportFailure("connect", "the client's connections were closed")
                )
