"""A real HTTP/1.1 server on 127.0.0.1 for tests: replays scripted replies byte for byte,
with pacing and faults, and records what it saw (requests, and when a client hung up).

It runs its own event loop in a thread, so sync and async tests use it alike. Every wait
is bounded. Each reply ends its connection (``Connection: close``), so "the client closed
the connection" is unambiguous: a read on the socket returns EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip as gzip_mod
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

STALL = "stall"  # a chunk that stops sending until the client goes away (bounded)
DROP = "drop"  # a chunk that aborts the connection mid-body


class Gate:
    """A chunk that holds the reply until the test calls ``open()`` (bounded: 30 s),
    so a test can check what the client saw while the server is still waiting."""

    def __init__(self) -> None:
        self._flag = threading.Event()

    def open(self) -> None:
        self._flag.set()

    @property
    def is_open(self) -> bool:
        return self._flag.is_set()


@dataclass
class Reply:
    """What the server sends for one request."""

    status: int = 200
    headers: dict[str, str] = field(
        default_factory=lambda: {"content-type": "text/event-stream"}
    )
    chunks: list[bytes | float | str | Gate] = field(default_factory=list)
    framing: Literal["chunked", "length", "close"] = "chunked"
    gzip: bool = False
    delay_headers: float = 0.0  # seconds before the status line

    @classmethod
    def sse(
        cls,
        body: bytes,
        *,
        chunk_size: int | None = None,
        delay: float = 0.0,
        **kw: Any,
    ) -> Reply:
        """Replay ``body``, split into ``chunk_size`` pieces ``delay`` seconds apart."""
        if chunk_size is None:
            return cls(chunks=[body], **kw)
        chunks: list[bytes | float | str] = []
        for i in range(0, len(body), chunk_size):
            if delay and i:
                chunks.append(delay)
            chunks.append(body[i : i + chunk_size])
        return cls(chunks=chunks, **kw)

    @classmethod
    def events(cls, datas: list[str], *, delay: float = 0.0, **kw: Any) -> Reply:
        """One SSE ``data:`` event per item, ``delay`` seconds apart."""
        chunks: list[bytes | float | str] = []
        for i, d in enumerate(datas):
            if delay and i:
                chunks.append(delay)
            chunks.append(f"data: {d}\n\n".encode())
        return cls(chunks=chunks, **kw)

    @classmethod
    def json(
        cls, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> Reply:
        h = {"content-type": "application/json", **(headers or {})}
        return cls(
            status=status,
            headers=h,
            chunks=[json.dumps(body).encode()],
            framing="length",
        )


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    finished_at: float | None = None  # when the reply ended (sent or abandoned)
    client_closed_at: float | None = None  # when the client hung up mid-reply
    stalled_at: float | None = None  # when the server began waiting at a STALL or Gate
    peer: tuple[str, int] | None = None  # the client's address and port

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def openai_chunks(
    words: list[str],
    *,
    finish: str | None = "stop",
    usage: dict[str, int] | None = None,
    done: bool = True,
) -> list[str]:
    """The ``data:`` payloads of an OpenAI-style stream that says ``words``."""
    base = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "test-model",
    }
    out = [
        json.dumps(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}}
                ],
            }
        )
    ]
    for w in words:
        out.append(
            json.dumps(
                {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {"content": w}, "finish_reason": None}
                    ],
                }
            )
        )
    if finish:
        out.append(
            json.dumps(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                }
            )
        )
    if usage:
        out.append(json.dumps({**base, "choices": [], "usage": usage}))
    if done:
        out.append("[DONE]")
    return out


def anthropic_chunks(
    words: list[str],
    *,
    stop: str | None = "end_turn",
    usage: dict[str, int] | None = None,
    done: bool = True,
    model: str = "test-model",
) -> list[str]:
    """The ``data:`` payloads of an Anthropic Messages stream that says ``words``."""
    out = [
        json.dumps(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_test",
                    "model": model,
                    "usage": {"input_tokens": (usage or {}).get("input_tokens", 5)},
                },
            }
        ),
        json.dumps(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
    ]
    for w in words:
        out.append(
            json.dumps(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": w},
                }
            )
        )
    if stop:
        out.append(json.dumps({"type": "content_block_stop", "index": 0}))
        out.append(
            json.dumps(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop},
                    "usage": {
                        "output_tokens": (usage or {}).get("output_tokens", len(words))
                    },
                }
            )
        )
    if done:
        out.append(json.dumps({"type": "message_stop"}))
    return out


class LoopbackServer:
    """``with LoopbackServer() as srv: srv.enqueue(Reply.sse(...)); srv.base_url``"""

    def __init__(self, *, keep_alive: bool = False) -> None:
        """``keep_alive``: serve many requests per connection (HTTP/1.1 keep-alive), and
        count the connections a client holds open (``open_connections``)."""
        self.keep_alive = keep_alive
        self.open_connections = 0
        self._loop = asyncio.new_event_loop()
        self._replies: list[Reply | Callable[[Seen], Reply]] = []
        # answers every request when nothing is queued (``serve``)
        self._default: Callable[[Seen], Reply] | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.requests: list[Seen] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._stopping = False
        started = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("loopback server did not start")
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _main(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            started.set()

        self._loop.run_until_complete(boot())
        self._loop.run_forever()

    def enqueue(self, *replies: Reply | Callable[[Seen], Reply]) -> None:
        with self._lock:
            self._replies.extend(replies)

    def serve(self, reply: Callable[[Seen], Reply] | None) -> None:
        """Answer every request with ``reply(seen)`` when no reply is queued (a
        scripted model server for many requests, e.g. tests/batchkit.py)."""
        with self._lock:
            self._default = reply

    def _next_reply(self) -> Reply | Callable[[Seen], Reply]:
        """The queued reply, else the default one, else a 500 (call with the lock)."""
        if self._replies:
            return self._replies.pop(0)
        if self._default is not None:
            return self._default
        return Reply.json(
            500, {"error": {"message": "the test server has no reply queued"}}
        )

    def reset(self) -> None:
        """Forget the queued replies and the requests seen (between examples)."""
        with self._lock:
            self._replies.clear()
            self.requests.clear()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` is true (checked whenever the server records
        something); returns False after ``timeout`` seconds."""
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

    async def _read_request(self, reader: asyncio.StreamReader) -> Seen | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        return Seen(method, path, headers, body, time.monotonic())

    async def _handle_keep_alive(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with self._lock:
            self.connections += 1
            self.open_connections += 1
        self._notify()
        try:
            while True:
                try:
                    seen = await self._read_request(reader)
                except asyncio.CancelledError:
                    return  # the server is closing with this connection idle
                if seen is None:
                    return  # the client closed the connection
                seen.peer = writer.get_extra_info("peername")
                with self._lock:
                    self.requests.append(seen)
                    spec = self._next_reply()
                self._notify()
                reply = spec(seen) if callable(spec) else spec
                try:
                    await self._send(reply, writer, asyncio.Event(), seen)
                except (ConnectionError, OSError):
                    return  # the client went away mid-reply
                finally:
                    seen.finished_at = time.monotonic()
                    self._notify()
        finally:
            writer.close()
            with self._lock:
                self.open_connections -= 1
            self._notify()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.keep_alive:
            await self._handle_keep_alive(reader, writer)
            return
        with self._lock:
            self.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        seen = Seen(method, path, headers, body, time.monotonic())
        seen.peer = writer.get_extra_info("peername")
        with self._lock:
            self.requests.append(seen)
            spec = self._next_reply()
        self._notify()
        reply = spec(seen) if callable(spec) else spec

        gone = asyncio.Event()

        async def watch() -> None:
            try:
                data = await reader.read(1)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                seen.client_closed_at = time.monotonic()
                gone.set()
                self._notify()

        watcher = asyncio.ensure_future(watch())
        try:
            await self._send(reply, writer, gone, seen)
        except (ConnectionError, OSError):
            pass
        finally:
            seen.finished_at = time.monotonic()
            self._notify()
            # give the watcher a moment to see an EOF that is already there
            try:
                await asyncio.wait_for(asyncio.shield(watcher), 0.2)
            except TimeoutError:
                watcher.cancel()
            writer.close()
            self._notify()

    async def _send(
        self,
        reply: Reply,
        writer: asyncio.StreamWriter,
        gone: asyncio.Event,
        seen: Seen,
    ) -> None:
        if reply.delay_headers:
            seen.stalled_at = time.monotonic()
            self._notify()
            try:
                await asyncio.wait_for(gone.wait(), reply.delay_headers)
                return
            except TimeoutError:
                seen.stalled_at = None
        headers = dict(reply.headers)
        if not self.keep_alive:
            headers["connection"] = "close"
        chunks = reply.chunks
        if reply.gzip:
            raw = b"".join(c for c in chunks if isinstance(c, bytes))
            chunks = [gzip_mod.compress(raw)]
            headers["content-encoding"] = "gzip"
        if reply.framing == "chunked":
            headers["transfer-encoding"] = "chunked"
        elif reply.framing == "length":
            headers["content-length"] = str(
                sum(len(c) for c in chunks if isinstance(c, bytes))
            )
        status_line = (
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\n"
        )
        writer.write(
            (
                status_line
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                + "\r\n"
            ).encode("latin-1")
        )
        await writer.drain()
        for chunk in chunks:
            if gone.is_set():
                return
            if isinstance(chunk, float | int):
                try:
                    await asyncio.wait_for(gone.wait(), float(chunk))
                    return
                except TimeoutError:
                    continue
            if isinstance(chunk, Gate):
                seen.stalled_at = time.monotonic()
                self._notify()
                deadline = time.monotonic() + 30
                while not chunk.is_open and not gone.is_set():
                    if time.monotonic() > deadline:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone.wait(), 0.005)
                seen.stalled_at = None
                if gone.is_set():
                    return
                continue
            if chunk == STALL:
                seen.stalled_at = time.monotonic()
                self._notify()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), 30)
                return
            if chunk == DROP:
                transport = writer.transport
                transport.abort()
                return
            assert isinstance(chunk, bytes)
            if reply.framing == "chunked":
                if chunk:
                    writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            else:
                writer.write(chunk)
            await writer.drain()
        if reply.framing == "chunked":
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    def close(self) -> None:
        if not self._thread.is_alive():
            return  # closed already

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            # end the handlers still running (a client may still be draining a body)
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        fut = asyncio.run_coroutine_threadsafe(stop(), self._loop)
        fut.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}
