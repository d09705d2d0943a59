"""One answer, whichever HTTP client fetched it: its status, headers and a body that
arrives in bounded pieces, and ``TransportFailure``, what every way of failing on the
network becomes.

The body is handed on at most ``SLICE`` bytes at a time, inflated here step by step
(gzip and deflate), with a pass through the event loop between two pieces of one
network read: a compressed body that inflates a thousandfold cannot hold the loop, and
Stop lands within one piece. A backend (``h1``, or httpx2 in ``transport``) supplies the
raw pieces and the closing; nothing here knows which one it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator
from typing import Literal

__all__ = [
    "DRAIN_BYTES",
    "DRAIN_S",
    "SLICE",
    "FailureKind",
    "Response",
    "TransportFailure",
]

SLICE = 16 * 1024  # the most body bytes handed on in one step (~2 ms of events)
DRAIN_S = 0.1  # after the end of a reply: read what is left this long, to keep the
DRAIN_BYTES = 64 * 1024  # connection for the next request; then close it

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


def _coding(headers: dict[str, str]) -> str:
    return headers.get("content-encoding", "").strip().lower()


class Response:
    """The status, headers and body of one answer.

    ``headers`` has lower-case names; a repeated header's values are joined with
    ``", "``, as HTTP allows. A backend overrides ``_raw`` (the body's pieces as the
    network gives them, still content-coded), ``aclose`` and, where it can decode
    more codings than gzip and deflate, ``_decoded``.
    """

    __slots__ = ("_drains", "headers", "reason", "status")

    # the backend's own exceptions that a body read may raise, turned by ``_failure``
    _ERRORS: tuple[type[Exception], ...] = ()

    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str],
        drains: set[asyncio.Task[None]],
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._drains = drains

    def __repr__(self) -> str:
        return f"<Response {self.status}>"

    # -- what a backend supplies -------------------------------------------------------
    def _raw(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    def _decoded(self, coding: str) -> AsyncIterator[bytes] | None:
        """The body decoded from ``coding`` (not gzip or deflate), or None: refused."""
        return None

    def _failure(self, exc: Exception) -> TransportFailure:
        return TransportFailure("broken", f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        raise NotImplementedError

    # -- the body ----------------------------------------------------------------------
    def body(self) -> AsyncIterator[bytes]:
        """The body's pieces as fast as they come: for a body sent as it is (the usual
        case), the network's own pieces, with nothing in between — a piece may then be
        longer than ``SLICE`` and its reader cuts it, and a failure comes out as
        one of ``BODY_ERRORS`` (``failure()`` says what it was); otherwise ``chunks()``."""
        if _coding(self.headers) in ("", "identity"):
            return self._raw()
        return self.chunks()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, decoded, in pieces of at most ``SLICE`` bytes."""
        encoding = _coding(self.headers)
        inflate: zlib._Decompress | None
        if encoding in ("", "identity"):
            inflate = None
        elif encoding in ("gzip", "x-gzip"):
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            inflate = zlib.decompressobj()
        else:  # br, zstd, several codings: the backend's decoders, sliced here
            decoded = self._decoded(encoding)
            if decoded is None:
                raise TransportFailure(
                    "protocol",
                    f"the body is encoded as {encoding[:40]!r}, which nbstream does "
                    "not decode (it asks for gzip or deflate)",
                )
            async for data in decoded:
                for i in range(0, len(data), SLICE):
                    if i:
                        await asyncio.sleep(0)
                    yield data[i : i + SLICE]
            return
        raw = self._raw()
        first = True
        try:
            while True:
                try:
                    data = await anext(raw)
                except StopAsyncIteration:
                    break
                except self._ERRORS as exc:
                    raise self._failure(exc) from None
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
        except (TimeoutError, TransportFailure):
            pass
        except self._ERRORS:
            pass
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            await self.aclose()
