"""Middleware: code that runs around every request a ``Client`` sends, the same for
sync and async use.

Subclass ``Middleware`` and override the hooks you need; pass instances to
``Client(middleware=[...])``. For each HTTP request (each retry and each fallback
attempt is one), in this order:

- ``before_request(request)``: sees the request before it is sent and may change its
  ``body`` and ``headers`` (the API key is not among them, and cannot be read or
  replaced here). May be a coroutine (``async def``): the request waits for it.
- ``on_response(request, response)``: the status and headers of the answer (scrubbed
  of the key).
- ``on_event(event, turn)``: every neutral event as it passes, before it reaches the
  turn: return it, a changed event, or ``None`` to drop it. Called on nbstream's loop for
  every event, so keep it cheap. Not a coroutine.
- ``after(request, turn, error)``: the finished turn of this request, or the error it
  ended with. May be a coroutine.

``request.state`` is a dict for a middleware to keep what it needs from one hook to
the next.

With ``middleware=[a, b]``, ``a`` wraps ``b``: requests pass ``a`` then ``b``; events,
responses and endings pass ``b`` then ``a``. A hook that raises ends the turn as
``error`` with a ``MiddlewareError`` that names the middleware.

>>> from nbstream import TextDelta
>>> class Shout(Middleware):
...     def on_event(self, event, turn):
...         if isinstance(event, TextDelta):
...             return TextDelta(event.text.upper(), event.choice)
...         return event
>>> client = Client(base_url="http://127.0.0.1:8000/v1", middleware=[Shout()])  # doctest: +SKIP

Built in: ``Logging`` (one line per request at INFO, every event at DEBUG) and
``RateLimit`` (requests and tokens per minute, and what servers say about their limits).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from ._core.errors import NbstreamError
from ._core.events import ErrorEvent, Event
from ._core.ratelimit import RateLimiter, parse_retry_after
from ._core.transcript import Turn

__all__ = [
    "Incoming",
    "Logging",
    "Middleware",
    "MiddlewareError",
    "Outgoing",
    "RateLimit",
]


class MiddlewareError(NbstreamError):
    """A middleware hook raised; ``middleware`` names it. The turn keeps its partial
    reply."""

    def __init__(
        self, message: str, *, middleware: str, turn: Turn | None = None
    ) -> None:
        super().__init__(message, turn=turn)
        self.middleware = middleware


@dataclass(eq=False)
class Outgoing:
    """A request about to be sent. Change ``body`` and ``headers`` in place."""

    model: str
    api: str
    url: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    attempt: int = 1  # 2 for the first retry, …
    state: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<Outgoing POST {self.url} model={self.model!r} attempt={self.attempt}>"


@dataclass(eq=False)
class Incoming:
    """The status and headers of an answer (header names in lower case)."""

    status: int
    headers: dict[str, str]
    url: str
    model: str

    def __repr__(self) -> str:
        return f"<Incoming {self.status} from {self.url}>"


class Middleware:
    """Base class: every hook does nothing until overridden (see the module docs)."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def before_request(self, request: Outgoing) -> Awaitable[None] | None:
        return None

    def on_response(self, request: Outgoing, response: Incoming) -> None:
        return None

    def on_event(self, event: Event, turn: Turn) -> Event | None:
        return event

    def after(
        self, request: Outgoing, turn: Turn, error: NbstreamError | None
    ) -> Awaitable[None] | None:
        return None

    def __repr__(self) -> str:
        return f"{self.name}()"


class Logging(Middleware):
    """Logs each request and how it ended, one line at INFO; every event at DEBUG.

    Uses Python's ``logging`` (logger ``nbstream.requests`` unless another is given),
    so it goes wherever the notebook's logging goes. What the server sent is scrubbed
    of the key before it gets here.

    >>> import logging
    >>> logging.basicConfig(level=logging.INFO)  # doctest: +SKIP
    >>> client = Client(middleware=[Logging()])  # doctest: +SKIP
    """

    def __init__(self, logger: logging.Logger | str | None = None) -> None:
        if logger is None or isinstance(logger, str):
            logger = logging.getLogger(logger or "nbstream.requests")
        self.logger = logger

    def before_request(self, request: Outgoing) -> None:
        request.state["logging.sent"] = time.perf_counter()
        self.logger.debug(
            "POST %s model=%s (attempt %d)", request.url, request.model, request.attempt
        )

    def on_response(self, request: Outgoing, response: Incoming) -> None:
        request.state["logging.status"] = response.status

    def on_event(self, event: Event, turn: Turn) -> Event | None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("event %r", event)
        elif isinstance(event, ErrorEvent):
            self.logger.warning("error event: %s", event.message)
        return event

    def after(self, request: Outgoing, turn: Turn, error: NbstreamError | None) -> None:
        sent = request.state.get("logging.sent")
        took = f" in {time.perf_counter() - sent:.2f} s" if sent is not None else ""
        status = request.state.get("logging.status", "no answer")
        head = f"POST {request.url} model={request.model}"
        if error is not None:
            self.logger.info(
                "%s → %s%s: %s: %s",
                head,
                status,
                took,
                type(error).__name__,
                error.message,
            )
            return
        u = turn.usage
        tokens = ""
        if u is not None:
            est = " (estimated)" if u.estimated else ""
            tokens = f" · {u.input_tokens} in · {u.output_tokens} out tokens{est}"
        self.logger.info(
            "%s → %s %s%s%s · finish %s",
            head,
            status,
            turn.status,
            took,
            tokens,
            turn.finish_reason,
        )


class RateLimit(Middleware):
    """Keeps a client's requests under ``rpm`` requests and ``tpm`` tokens a minute,
    spread evenly (no burst of a minute's budget at the start), and honours what the
    server says: ``retry-after`` on a 429 or 529 pauses every request, and
    ``x-ratelimit-*`` / ``anthropic-ratelimit-*`` headers slow them down as the budget
    left runs low. The policy is ``nbstream``'s rate limiter, the one ``nbstream.batch``
    uses.

    One instance is one budget: give the same instance to every client that shares an
    account's limits.

    >>> client = Client(middleware=[RateLimit(rpm=500, tpm=200_000)])  # doctest: +SKIP

    A request's tokens are reserved before it is sent (its input, estimated from its
    size, plus ``max_tokens`` or the average reply so far) and settled with the real
    usage when it ends.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.limiter = RateLimiter(rpm=rpm, tpm=tpm)
        self._lock = threading.Lock()  # sync calls and async ones run on two loops

    def __repr__(self) -> str:
        return f"RateLimit(rpm={self.limiter.rpm}, tpm={self.limiter.tpm})"

    async def before_request(self, request: Outgoing) -> None:
        body = request.body
        out = body.get("max_tokens") or body.get("max_completion_tokens")
        size = len(json.dumps(body.get("messages", ""), ensure_ascii=False))
        cost = self.limiter.reserve_for(size / 4, out if isinstance(out, int) else None)
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self.limiter.delay(now, cost)
                if wait <= 0:
                    self.limiter.start(now, cost)
                    break
            await asyncio.sleep(wait)
        request.state["ratelimit"] = (cost, time.monotonic())

    def on_response(self, request: Outgoing, response: Incoming) -> None:
        now, wall = time.monotonic(), time.time()
        with self._lock:
            self.limiter.observe(now, response.status, response.headers, wall)
            if response.status in (429, 529):
                sent = request.state.get("ratelimit", (0.0, None))[1]
                after = parse_retry_after(response.headers, wall)
                self.limiter.rate_limited(now, after, sent_at=sent)
            elif 200 <= response.status < 300:
                self.limiter.succeeded()

    def after(self, request: Outgoing, turn: Turn, error: NbstreamError | None) -> None:
        reserved = request.state.get("ratelimit", (None, None))[0]
        if reserved is None:
            return
        u = turn.usage
        used = output = None
        if u is not None and u.input_tokens is not None and u.output_tokens is not None:
            used, output = u.input_tokens + u.output_tokens, u.output_tokens
        with self._lock:
            self.limiter.settle(reserved, used, output)
