"""HTTP for one event loop: which client sends a request, and the only module (with
``replay``) that imports ``httpx2``.

Two clients can send nbstream's streaming POSTs, behind one ``HTTP.send(url, body,
headers) -> Response`` (``response`` says what a ``Response`` offers):

- ``h1`` (the default): nbstream's own HTTP/1.1 client on asyncio, keep-alive
  connections from a free list, TLS through asyncio's ``ssl``. It costs ~1 µs a chunk
  of a stream and ~0.3 ms of a request where httpx2 costs ~11 µs and ~3 ms
  (bench/README.md).
- ``httpx2``, for everything ``h1`` does not do: a proxy (``HTTP_PROXY``,
  ``HTTPS_PROXY``, ``ALL_PROXY`` with ``NO_PROXY``, read as httpx2 reads them: when
  httpx2 would send a request through a proxy, httpx2 sends it), recording and
  replaying (``replay``: httpx2 transports), a base URL with a user name or a non-ASCII
  host, and brotli or zstd bodies (``h1`` refuses those; nbstream asks for gzip or
  deflate).

``Client(http="httpx2")`` or ``NBSTREAM_HTTP=httpx2`` uses httpx2 always;
``http="h1"`` uses ``h1`` even where a proxy is configured; ``"auto"`` (the default)
chooses as above. Both verify certificates alike (httpx2's TLS context:
``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), time the connect and the write alike,
and read the body with no timeout of their own (the producer's watchdog times it).
Failures come out as ``TransportFailure`` with a kind the producer turns into an error
a user can act on; nothing here decides about retries or messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import weakref
from collections.abc import AsyncIterator
from typing import Any, Literal
from urllib.parse import urlsplit

# httpx2 imports its transport stack (httpcore2, h11, anyio: ~60 of ~250 ms of
# ``import nbstream`` on a loaded machine) when a client first uses it; h1 needs none
# of it, so it is no longer imported with nbstream.
import httpx2

from .._core.secrets import Scrubber
from .h1 import H1
from .replay import Recording, RecordingTransport, ReplayTransport
from .request import encode_body
from .response import DRAIN_BYTES, DRAIN_S, SLICE, Response, TransportFailure
from .settings import Timeouts

__all__ = [
    "BODY_ERRORS",
    "DRAIN_BYTES",
    "DRAIN_S",
    "HTTP",
    "HTTP_CHOICES",
    "SLICE",
    "HttpChoice",
    "Response",
    "TransportFailure",
    "failure",
    "guard_logs",
]

HttpChoice = Literal["auto", "h1", "httpx2"]
HTTP_CHOICES: tuple[HttpChoice, ...] = ("auto", "h1", "httpx2")

_SCRUBBERS: weakref.WeakSet[Scrubber] = weakref.WeakSet()
# httpcore2 logs every response's headers at DEBUG, and so does h1 ("nbstream.http"):
# a server that echoes the key in a header would put it in the user's logs. These
# loggers' records pass the scrubbers of every client alive in this process first.
_HTTP_LOGGERS = (
    "nbstream.http",
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


# -- which client -------------------------------------------------------------------


def proxied(url: str) -> bool:
    """Would httpx2, reading the environment as it does, send ``url`` through a
    proxy? (Its own rules: ``AsyncClient._transport_for_url`` over the mounts that
    ``get_environment_proxies`` gives, most specific first.)"""
    try:
        from httpx2._utils import URLPattern, get_environment_proxies
    except ImportError:  # httpx2 moved them: any proxy variable means httpx2
        names = ("http_proxy", "https_proxy", "all_proxy")
        return any(os.environ.get(n) or os.environ.get(n.upper()) for n in names)
    mounts = {URLPattern(k): v for k, v in get_environment_proxies().items()}
    target = httpx2.URL(url)
    for pattern in sorted(mounts):
        if pattern.matches(target):
            return mounts[pattern] is not None
    return False


def choose(
    base_url: str, http: HttpChoice, *, recorded: bool = False
) -> Literal["h1", "httpx2"]:
    """The client that sends this base URL's requests (see the module docstring)."""
    if http == "httpx2" or recorded:
        return "httpx2"
    if http == "h1":
        return "h1"
    parts = urlsplit(base_url)
    if parts.username is not None or not (parts.hostname or "").isascii():
        return "httpx2"
    return "httpx2" if proxied(base_url) else "h1"


_SSL: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def ssl_context() -> ssl.SSLContext:
    """httpx2's default TLS context (certificates verified; ``SSL_CERT_FILE`` or
    ``SSL_CERT_DIR`` if set, else the system's), offering only HTTP/1.1. Built once
    per value of those variables (a build loads the CA file: ~20-50 ms)."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    ctx = _SSL.get(key)
    if ctx is None:
        ctx = httpx2.create_ssl_context()
        ctx.set_alpn_protocols(["http/1.1"])
        _SSL[key] = ctx
    return ctx


# -- the httpx2 client ----------------------------------------------------------------


class _HttpxResponse(Response):
    """An answer read by httpx2."""

    __slots__ = ("_inner",)
    _ERRORS = (httpx2.TransportError,)

    def __init__(self, inner: httpx2.Response, drains: set[asyncio.Task[None]]) -> None:
        headers: dict[str, str] = {}
        for k, v in inner.headers.multi_items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        super().__init__(inner.status_code, inner.reason_phrase, headers, drains)
        self._inner = inner

    def _raw(self) -> AsyncIterator[bytes]:
        stream = self._inner.stream
        if isinstance(stream, httpx2.AsyncByteStream):
            return stream.__aiter__()
        return self._inner.aiter_raw()

    def _decoded(self, coding: str) -> AsyncIterator[bytes] | None:
        return self._inner.aiter_bytes()  # httpx2's decoders (br, zstd, several)

    def _failure(self, exc: Exception) -> TransportFailure:
        return _failure(exc)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._inner.aclose()


class HTTP:
    """The connections of one client on one event loop, through the client that
    ``choose`` picks."""

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
        http: HttpChoice = "auto",
    ) -> None:
        self.max_connections = max_connections
        self.recording = bool(record) and recording is None
        self._drains: set[asyncio.Task[None]] = set()
        self.kind = choose(
            base_url, http, recorded=bool(record) or recording is not None
        )
        self._h1: H1 | None = None
        self._client: httpx2.AsyncClient | None = None
        if self.kind == "h1":
            self._h1 = H1(
                timeouts,
                max_connections=max_connections,
                ssl_context=ssl_context,
                drains=self._drains,
            )
            return
        verify = base_url.startswith("https://")
        transport: httpx2.AsyncBaseTransport | None = None
        if recording is not None:
            transport = ReplayTransport(recording, replay_speed)
        elif record:
            transport = RecordingTransport(record, verify=verify, scrub=scrub_bytes)
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
        if self._h1 is not None:
            return await self._h1.send(url, body, headers)
        client = self._client
        assert client is not None
        request = client.build_request(
            "POST",
            url,
            content=encode_body(body),
            headers={"content-type": "application/json", **headers},
        )
        try:
            inner = await client.send(request, stream=True)
        except httpx2.TransportError as exc:
            raise _failure(exc) from None
        return _HttpxResponse(inner, self._drains)

    async def aclose(self) -> None:
        for task in list(self._drains):
            task.cancel()
        if self._drains:
            await asyncio.wait(list(self._drains), timeout=1.0)
        if self._h1 is not None:
            self._h1.close()
        if self._client is not None:
            await self._client.aclose()
