"""HTTP for one event loop: the only module (with ``replay``) that imports ``httpx2``.

It sends a request and hands back a small ``Response`` whose body arrives in bounded
pieces: at most ``SLICE`` bytes each, inflated here step by step (gzip and deflate), with
a pass through the event loop between two pieces of one network read. So a compressed
body that inflates a thousandfold cannot hold the loop, and Stop lands within one piece.
Failures come out as ``TransportFailure`` with a kind the producer turns into an error
a user can act on; nothing here decides about retries or messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
import zlib
from collections.abc import AsyncIterator
from typing import Any, Literal

# httpx2 imports its transport stack on first use. Importing it here instead moves that
# from the first request to ``import nbstream`` (measured: the first request in a fresh
# process was ~30 ms slower than a warm one; bench/engine.py).
import anyio._backends._asyncio  # noqa: F401
import h11  # noqa: F401
import httpcore2  # noqa: F401
import httpx2
import sniffio  # noqa: F401

from .._core.secrets import Scrubber
from .replay import Recording, RecordingTransport, ReplayTransport
from .settings import Timeouts

__all__ = ["HTTP", "SLICE", "Response", "TransportFailure"]

SLICE = 16 * 1024  # the most body bytes handed on in one step (~2 ms of events)
DRAIN_S = 0.1  # after the end of a reply: read what is left this long, to keep the
DRAIN_BYTES = 64 * 1024  # connection for the next request; then close it

_SCRUBBERS: weakref.WeakSet[Scrubber] = weakref.WeakSet()
# httpcore2 logs every response's headers at DEBUG: a server that echoes the key in a
# header would put it in the user's logs. These loggers' records pass the scrubbers of
# every client alive in this process first.
_HTTP_LOGGERS = (
    "httpx2",
    "httpcore2.connection",
    "httpcore2.connection_pool",
    "httpcore2.http11",
    "httpcore2.http2",
    "httpcore2.proxy",
    "httpcore2.socks",
)


class _ScrubLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        scrubbers = list(_SCRUBBERS)
        if scrubbers:
            text = record.getMessage()
            for s in scrubbers:
                text = s.scrub(text)
            record.msg, record.args = text, None
        return True


_FILTER = _ScrubLogs()
for _name in _HTTP_LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)


def guard_logs(scrubber: Scrubber) -> None:
    """Scrub this client's key from the HTTP libraries' log records while it lives."""
    if scrubber:
        _SCRUBBERS.add(scrubber)


FailureKind = Literal[
    "connect", "connect_timeout", "pool_timeout", "protocol", "broken"
]


class TransportFailure(Exception):
    """The network failed; ``kind`` says how, ``detail`` is the library's own words
    (not yet scrubbed: the caller scrubs before showing it)."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail

    def __repr__(self) -> str:
        return f"TransportFailure({self.kind!r})"


BODY_ERRORS = (httpx2.TransportError, TransportFailure)


def failure(exc: Exception) -> TransportFailure:
    """What went wrong on the network, as a ``TransportFailure``."""
    if isinstance(exc, TransportFailure):
        return exc
    return _failure(exc)


def _failure(exc: Exception) -> TransportFailure:
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx2.PoolTimeout):
        return TransportFailure("pool_timeout", detail)
    if isinstance(exc, httpx2.ConnectTimeout):
        return TransportFailure("connect_timeout", detail)
    if isinstance(exc, httpx2.ConnectError):
        return TransportFailure("connect", detail)
    if isinstance(exc, httpx2.ProtocolError | httpx2.UnsupportedProtocol):
        return TransportFailure("protocol", detail)
    return TransportFailure("broken", detail)


class Response:
    """The status, headers and body of one answer."""

    __slots__ = ("_drains", "_inner", "headers", "reason", "status")

    def __init__(self, inner: httpx2.Response, drains: set[asyncio.Task[None]]) -> None:
        self._inner = inner
        self._drains = drains
        self.status = inner.status_code
        self.reason = inner.reason_phrase
        # lower-case names; a repeated header's values joined, as HTTP allows
        self.headers: dict[str, str] = {}
        for k, v in inner.headers.multi_items():
            k = k.lower()
            self.headers[k] = f"{self.headers[k]}, {v}" if k in self.headers else v

    def __repr__(self) -> str:
        return f"<Response {self.status}>"

    def body(self) -> AsyncIterator[bytes]:
        """The body's pieces as fast as they come: for a body sent as it is (the usual
        case), the network's own pieces, with nothing in between — a piece may then be
        longer than ``SLICE`` and its reader cuts it, and a failure comes out as
        one of ``BODY_ERRORS`` (``failure()`` says what it was); otherwise ``chunks()``."""
        encoding = self.headers.get("content-encoding", "").strip().lower()
        stream = self._inner.stream
        if encoding in ("", "identity") and isinstance(stream, httpx2.AsyncByteStream):
            return stream.__aiter__()
        return self.chunks()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, decoded, in pieces of at most ``SLICE`` bytes."""
        encoding = self.headers.get("content-encoding", "").strip().lower()
        if encoding in ("", "identity"):
            inflate = None
        elif encoding in ("gzip", "x-gzip"):
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            inflate = zlib.decompressobj()
        else:  # br, zstd, several codings: httpx2's decoders, sliced afterwards
            async for data in self._inner.aiter_bytes():
                for i in range(0, len(data), SLICE):
                    if i:
                        await asyncio.sleep(0)
                    yield data[i : i + SLICE]
            return
        stream = self._inner.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        raw = stream.__aiter__()
        first = True
        try:
            while True:
                try:
                    data = await anext(raw)
                except StopAsyncIteration:
                    break
                except httpx2.TransportError as exc:
                    raise _failure(exc) from None
                if inflate is None:
                    for i in range(0, len(data), SLICE):
                        if i:
                            await asyncio.sleep(0)
                        yield data[i : i + SLICE]
                    continue
                try:
                    if first and encoding == "deflate":
                        try:
                            out = inflate.decompress(data, SLICE)
                        except zlib.error:  # raw deflate, without the zlib wrapper
                            inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                            out = inflate.decompress(data, SLICE)
                    else:
                        out = inflate.decompress(data, SLICE)
                    first = False
                    if out:
                        yield out
                    while inflate.unconsumed_tail:
                        await asyncio.sleep(0)  # Stop can land between two pieces
                        out = inflate.decompress(inflate.unconsumed_tail, SLICE)
                        if out:
                            yield out
                except zlib.error as exc:
                    raise TransportFailure(
                        "broken", f"the {encoding} body does not inflate ({exc})"
                    ) from None
            if inflate is not None:
                tail = inflate.flush()
                for i in range(0, len(tail), SLICE):
                    yield tail[i : i + SLICE]
        finally:
            aclose = getattr(raw, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body, then the response is closed."""
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in self.chunks():
                parts.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
        except TransportFailure:
            pass  # what came is what there is
        finally:
            await self.aclose()
        return b"".join(parts)[:limit]

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._inner.aclose()

    def release(self, chunks: AsyncIterator[bytes]) -> None:
        """The reply is over: read what is left of the body in the background, briefly,
        so the connection can serve the next request, then close it. The turn does not
        wait for this (a server that keeps the body open after the end marker must not
        delay the end of every turn)."""
        task = asyncio.get_running_loop().create_task(self.drain(chunks))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def drain(self, chunks: AsyncIterator[bytes]) -> None:
        """Read what is left (briefly, a little), then close."""
        left = DRAIN_BYTES
        try:
            async with asyncio.timeout(DRAIN_S):
                async for chunk in chunks:
                    left -= len(chunk)
                    if left < 0:
                        break
        except (TimeoutError, *BODY_ERRORS):
            pass
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            await self.aclose()


class HTTP:
    """The connection pool of one client on one event loop."""

    def __init__(
        self,
        base_url: str,
        timeouts: Timeouts,
        *,
        max_connections: int | None = None,
        record: str | None = None,
        recording: Recording | None = None,
        replay_speed: float = 1.0,
        scrub_bytes: Any = None,
    ) -> None:
        verify = base_url.startswith("https://")
        transport: httpx2.AsyncBaseTransport | None = None
        if recording is not None:
            transport = ReplayTransport(recording, replay_speed)
        elif record:
            transport = RecordingTransport(record, verify=verify, scrub=scrub_bytes)
        self.max_connections = max_connections
        self.recording = transport is not None and recording is None
        self._drains: set[asyncio.Task[None]] = set()
        self._client = httpx2.AsyncClient(
            transport=transport,
            timeout=httpx2.Timeout(
                connect=timeouts.connect,
                read=None,  # the producer's watchdog times the body
                write=timeouts.idle,
                pool=timeouts.connect,
            ),
            # No cap by default: a 101st concurrent stream must not wait for a free
            # connection and then fail as if the reply had broken.
            limits=httpx2.Limits(
                max_connections=max_connections, max_keepalive_connections=20
            ),
            # No TLS context for plain-http servers (local models): it costs ~50 ms.
            verify=verify,
        )

    async def send(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> Response:
        client = self._client
        request = client.build_request("POST", url, json=body, headers=headers)
        try:
            inner = await client.send(request, stream=True)
        except httpx2.TransportError as exc:
            raise _failure(exc) from None
        return Response(inner, self._drains)

    async def aclose(self) -> None:
        for task in list(self._drains):
            task.cancel()
        if self._drains:
            await asyncio.wait(list(self._drains), timeout=1.0)
        await self._client.aclose()
