"""A TCP server on 127.0.0.1 that answers each HTTP request with scripted raw bytes,
for tests of what a client does with whatever a server sends (not a test module).

``RawServer`` reads each request (its head, then ``Content-Length`` bytes of body),
takes the next ``Script`` and plays it: bytes as they are, pauses, a close, an abort.
A script with ``keep=True`` leaves the connection open for the next request. It records
every request with the connection it came on, whether bytes of another request came
while an answer was still being sent (pipelining), and when the client hung up on
each connection. Every wait is bounded.

It runs its own event loop in a thread, like ``tests.loopback.LoopbackServer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["ABORT", "CLOSE", "RawServer", "Request", "Script", "chunked", "sse_body"]

CLOSE = "close"  # close the connection (FIN) here
ABORT = "abort"  # reset the connection here
MAX_REQUEST = 1 << 20


@dataclass
class Script:
    """What the server sends for one request: ``bytes`` are written, a ``float`` is a
    pause (cut short when the client hangs up), ``CLOSE`` / ``ABORT`` end the
    connection. ``stream``: bytes written after ``parts`` until the generator ends or
    the client hangs up (answers too big to build). ``keep``: the connection stays open
    for another request afterwards, unless the script closed it."""

    parts: list[bytes | float | str] = field(default_factory=list)
    keep: bool = False
    stream: Callable[[], Iterator[bytes]] | None = None


@dataclass
class Request:
    connection: int  # which connection (0, 1, …) it came on
    head: bytes
    body: bytes
    received_at: float

    @property
    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            name, colon, value = line.partition(":")
            if colon:
                out[name.strip().lower()] = value.strip()
        return out


def chunked(*pieces: bytes, end: bytes = b"0\r\n\r\n") -> bytes:
    """``pieces`` in chunked transfer coding, one chunk each, then ``end``."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + end


def sse_body(*datas: str) -> list[bytes]:
    """One ``data:`` event per item."""
    return [f"data: {d}\n\n".encode() for d in datas]


class _Conn(asyncio.Protocol):
    """One connection, seen from the server."""

    def __init__(self, server: RawServer, index: int) -> None:
        self.server = server
        self.index = index
        self.buf = bytearray()
        self.changed = asyncio.Event()  # bytes came, or the client hung up
        self.writable = asyncio.Event()
        self.writable.set()
        self.transport: asyncio.Transport | None = None
        self.answering = False
        self.eof = False
        self.closed_at: float | None = None  # when the client hung up
        self.sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        tls = transport.get_extra_info("ssl_object")
        if tls is not None:
            self.server.alpn.append(tls.selected_alpn_protocol())
        task = asyncio.ensure_future(self.server._serve(self))
        self.server._tasks.add(task)
        task.add_done_callback(self.server._tasks.discard)

    def data_received(self, data: bytes) -> None:
        if self.answering:
            self.server._pipelined()
        self.buf += data
        self.changed.set()

    def eof_received(self) -> bool:
        self._gone()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def _gone(self) -> None:
        if not self.eof:
            self.eof = True
            self.closed_at = time.monotonic()
            self.changed.set()
            self.server._notify()

    async def wait_change(self, timeout: float) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)

    async def write(self, data: bytes) -> bool:
        """False once the client is gone."""
        if self.eof or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        self.sent += len(data)
        try:
            await asyncio.wait_for(self.writable.wait(), 10)
        except TimeoutError:
            return False
        return not self.eof


class RawServer:
    """``with RawServer() as srv: srv.enqueue(Script([...])); srv.base_url``"""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._scripts: list[Script] = []
        self.requests: list[Request] = []
        self.connections: list[_Conn] = []
        self.pipelined = 0  # bytes of a request came while an answer was being sent
        self.sni: list[str | None] = []  # TLS: the server name each client asked for
        self.alpn: list[str | None] = []  # and the protocol they agreed on
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        started = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("raw server did not start")
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        host = "localhost" if self._ssl else "127.0.0.1"
        return f"{'https' if self._ssl else 'http'}://{host}:{self.port}/v1"

    @property
    def open_connections(self) -> int:
        return sum(not c.eof for c in self.connections)

    def _main(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        if self._ssl is not None:
            self._ssl.sni_callback = self._on_sni

        async def boot() -> None:
            self._server = await self._loop.create_server(
                self._new_conn, "127.0.0.1", 0, ssl=self._ssl
            )
            started.set()

        self._loop.run_until_complete(boot())
        self._loop.run_forever()

    def _new_conn(self) -> _Conn:
        with self._lock:
            conn = _Conn(self, len(self.connections))
            self.connections.append(conn)
        self._notify()
        return conn

    def _on_sni(self, sock: ssl.SSLObject, name: str | None, ctx: object) -> None:
        self.sni.append(name)

    def _pipelined(self) -> None:
        with self._lock:
            self.pipelined += 1

    def enqueue(self, *scripts: Script) -> None:
        with self._lock:
            self._scripts.extend(scripts)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    async def _read_request(self, conn: _Conn) -> Request | None:
        deadline = time.monotonic() + 10
        while True:
            end = conn.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(conn.buf[: end + 4])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = min(int(value.strip() or b"0"), MAX_REQUEST)
                if len(conn.buf) >= end + 4 + length:
                    body = bytes(conn.buf[end + 4 : end + 4 + length])
                    del conn.buf[: end + 4 + length]
                    return Request(conn.index, head, body, time.monotonic())
            if conn.eof or time.monotonic() > deadline or len(conn.buf) > MAX_REQUEST:
                return None
            await conn.wait_change(0.5)

    async def _serve(self, conn: _Conn) -> None:
        try:
            while True:
                request = await self._read_request(conn)
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                    script = self._scripts.pop(0) if self._scripts else Script([CLOSE])
                self._notify()
                if await self._play(script, conn) or not script.keep:
                    return
        finally:
            if conn.transport is not None:
                conn.transport.close()
            self._notify()

    async def _play(self, script: Script, conn: _Conn) -> bool:
        """Send the script; True if it ended the connection."""
        # answering until its last bytes are written: a request's bytes before that
        # would be pipelined (after it, they are the next request on a kept connection)
        last = max(
            (i for i, p in enumerate(script.parts) if isinstance(p, bytes)), default=-1
        )
        conn.answering = last >= 0 or script.stream is not None
        try:
            for i, part in enumerate(script.parts):
                if i == last and script.stream is None:
                    conn.answering = False  # before the write: nothing runs between
                if isinstance(part, float):
                    deadline = time.monotonic() + part
                    while not conn.eof and time.monotonic() < deadline:
                        await conn.wait_change(deadline - time.monotonic())
                    continue
                if part == CLOSE:
                    if conn.transport is not None:
                        conn.transport.close()
                    return True
                if part == ABORT:
                    if conn.transport is not None:
                        conn.transport.abort()
                    return True
                assert isinstance(part, bytes)
                if not await conn.write(part):
                    return True
            if script.stream is not None:
                for block in script.stream():
                    if not await conn.write(block):
                        return True
            return conn.eof
        finally:
            conn.answering = False

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for c in self.connections:
                if c.transport is not None:
                    c.transport.abort()
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
